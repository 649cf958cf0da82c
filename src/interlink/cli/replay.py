"""`interlink replay CONVERSATION`: drive a recorded conversation again.

The recorded inputs are in the store: every call's signed envelope in the `calls` log (its
input), its outcome in the `calls` bucket (kept `hub.keep_results_seconds`), every event in the
events log, and the crossings in the trace store. A replay re-sends the conversation's entry
calls — those its first agent made (hop 0); the agents make the nested ones again themselves —
as that agent (its credential from the mesh home), in a fresh conversation `replay-…`, through
the same gate, then compares the new run with the recorded one: each answer, and the sequence
of crossings. `--dry-run` shows what would be sent; `--simulate` needs no hub and no agents:
it steps through the recorded run, answering each call with its recorded reply.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape

from ..envelope import body_data, new_id
from ..home import MeshHome
from .base import HomeOption, app, fail, friendly, home_store, out, run
from .traces import PANEL, crossing


@dataclass
class Step:
    """One recorded call of the conversation, with what it was given and what it answered."""

    call_id: str
    caller: str
    target: str
    skill: str
    hops: int
    input: Any
    seq: int
    outcome: str = "unknown"
    """done, failed, timeout, … or `not kept` when its record expired."""
    answer: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)


async def recorded(mesh: MeshHome, conversation: str) -> tuple[list[Step], list[dict[str, Any]],
                                                              list[dict[str, Any]]]:
    """The conversation's calls (in log order), its events, and its spans."""
    from ..services.events import events_log
    from ..services.traces import conversation_spans, traces_log
    settings = mesh.load_policy().hub
    steps: dict[str, Step] = {}
    events: list[dict[str, Any]] = []
    async with home_store(mesh) as store:
        calls_log, calls_kv = await store.log("calls"), await store.kv("calls")
        start = 1
        while batch := await calls_log.read(start, limit=1000):
            for message in batch:
                wire = json.loads(message.data).get("wire") or {}
                if wire.get("conversation") != conversation or wire.get("id") in steps:
                    continue
                agent, _, skill = str(wire.get("target")).partition(".")
                try:
                    given: Any = body_data(wire.get("body") or {})
                except ValueError:
                    given = wire.get("body")
                steps[wire["id"]] = Step(wire["id"], wire["sender"], agent, skill,
                                         int(wire.get("hops", 0)), given, message.seq)
            start = batch[-1].seq + 1
        for step in steps.values():
            entry = await calls_kv.get(step.call_id)
            if entry is None or not entry.value:
                step.outcome = "not kept"
                continue
            record = json.loads(entry.value)
            step.outcome = record.get("state", "unknown")
            if record.get("reply"):
                try:
                    step.answer = body_data(record["reply"].get("body") or {})
                except ValueError:
                    step.answer = record["reply"].get("body")
            elif record.get("error"):
                step.answer = {"error": record["error"]}
        log_ = await events_log(store, settings)
        start = 1
        while batch := await log_.read(start, limit=1000):
            for message in batch:
                wire = json.loads(message.data).get("wire") or {}
                if wire.get("conversation") == conversation:
                    try:
                        data: Any = body_data(wire.get("body") or {})
                    except ValueError:
                        data = wire.get("body")
                    events.append({"topic": message.subject, "sender": wire.get("sender"),
                                   "data": data, "seq": message.seq})
            start = batch[-1].seq + 1
        spans = await conversation_spans(await traces_log(store, settings), conversation)
    return sorted(steps.values(), key=lambda s: s.seq), events, spans


@app.command(rich_help_panel=PANEL)
@friendly
def replay(conversation: Annotated[str, typer.Argument(help="The recorded conversation.")],
           home: HomeOption = None,
           dry_run: Annotated[bool, typer.Option(
               "--dry-run", help="Only show what would be sent.")] = False,
           simulate: Annotated[bool, typer.Option(
               "--simulate", help="No hub, no agents: step through the recording, each call "
                                  "answered with its recorded reply.")] = False,
           hub: Annotated[str | None, typer.Option(
               help="Hub URL (default from the home).")] = None,
           timeout: Annotated[float, typer.Option(help="Seconds per replayed call.")] = 30.0
           ) -> None:
    """Drive a recorded conversation again, through the same gate, to the agents as they are
    now, and show where the new run differs from the recorded one.

    Example: interlink replay 3f2a… --dry-run"""
    mesh = MeshHome(home)
    steps, events, spans = run(recorded(mesh, conversation))
    if not steps and not events:
        raise fail(f"nothing recorded for conversation {conversation!r}",
                   "check the id (`interlink tail` shows conversations as they pass)")
    entry = [s for s in steps if s.hops == 0]
    if simulate:
        _simulate(conversation, steps, events)
        return
    if dry_run or not entry:
        out.print(f"[bold]replay of {rich_escape(conversation)}[/] would send "
                  f"{len(entry)} call(s), each in a fresh conversation:")
        for step in entry:
            out.print(f"  {rich_escape(step.caller)} → {rich_escape(step.target)}."
                      f"{rich_escape(step.skill)}  {rich_escape(_short(step.input))}",
                      highlight=False)
        if not entry:
            raise fail("the recording has no entry call (hop 0) to send",
                       "its calls were made by agents while serving others; replay the "
                       "conversation that started them")
        return
    differences = run(_live(mesh, conversation, entry, spans, hub, timeout))
    if differences:
        out.print(f"[yellow]the replay differs from the recording[/] ({len(differences)}):")
        for line in differences:
            out.print("  " + line, highlight=False)
        raise typer.Exit(1)
    out.print("[green]✓[/] the replay matches the recording: the same answers, the same "
              "crossings")


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _simulate(conversation: str, steps: list[Step], events: list[dict[str, Any]]) -> None:
    out.print(f"[bold]simulated replay of {rich_escape(conversation)}[/]: the recording, step "
              "by step, each call answered with its recorded reply (no hub, no agents)")
    items: list[tuple[int, str]] = []
    for n, step in enumerate(steps, 1):
        indent = "  " * step.hops
        items.append((step.seq, f"{indent}{n}. {rich_escape(step.caller)} → "
                                f"{rich_escape(step.target)}.{rich_escape(step.skill)} "
                                f"given {rich_escape(_short(step.input))}\n{indent}   "
                                f"answered ({step.outcome}) "
                                f"{rich_escape(_short(step.answer))}"))
    for event in events:
        items.append((event["seq"], f"   event {rich_escape(str(event['topic']))} from "
                                    f"{rich_escape(str(event['sender']))}: "
                                    f"{rich_escape(_short(event['data']))}"))
    for _, line in items:
        out.print(line, highlight=False)


async def _live(mesh: MeshHome, conversation: str, entry: list[Step],
                spans: list[dict[str, Any]], hub: str | None, timeout: float) -> list[str]:
    from ..errors import GateDenied, InterlinkError
    from ..sdk import connect
    from ..services.traces import conversation_spans, traces_log
    differences: list[str] = []
    fresh = f"replay-{new_id()[:12]}"
    out.print(f"replaying {len(entry)} call(s) of {rich_escape(conversation)} in "
              f"conversation [bold]{fresh}[/]")
    for step in entry:
        try:
            async with connect(step.caller, credential=mesh.credential_path(step.caller),
                               hub=hub) as caller:
                got: Any = await caller.call(step.target, step.skill, step.input,
                                             timeout=timeout, conversation=fresh)
                outcome = "done"
        except GateDenied as exc:
            got, outcome = {"error": exc.to_dict()}, "refused"
        except InterlinkError as exc:
            got, outcome = {"error": str(exc)}, "failed"
        what = f"{step.caller} → {step.target}.{step.skill}"
        if step.outcome == "not kept":
            out.print(f"  {rich_escape(what)}: answered {rich_escape(_short(got))} (the "
                      "recorded answer is no longer kept: not compared)", highlight=False)
        elif (outcome, got) != (("done" if step.outcome == "done" else step.outcome),
                                step.answer):
            differences.append(f"{what}: recorded {step.outcome} {_short(step.answer)}, "
                               f"now {outcome} {_short(got)}")
    await asyncio.sleep(1.0)  # the hub writes its spans every quarter second
    async with home_store(mesh) as store:
        now = await conversation_spans(
            await traces_log(store, mesh.load_policy().hub), fresh)
    before, after = _crossings(spans), _crossings(now)
    if before != after:
        for n in range(max(len(before), len(after))):
            old = before[n] if n < len(before) else "(nothing)"
            new = after[n] if n < len(after) else "(nothing)"
            if old != new:
                differences.append(f"crossing {n + 1}: recorded {old}, now {new}")
    return differences


def _crossings(spans: list[dict[str, Any]]) -> list[str]:
    """What crossed, in order, without ids and times (replies and events included)."""
    out_: list[str] = []
    for span in spans:
        attributes = span.get("attributes") or {}
        if attributes.get("interlink.kind") in (None, "hello", "ack", "subscribe"):
            continue
        who, to, what = crossing(span)
        verdict = str(attributes.get("interlink.decision"))
        if verdict == "refused":
            verdict += (f" at {attributes.get('interlink.stage')} "
                        f"({attributes.get('interlink.code')})")
        out_.append(f"{who} → {to} {what} {verdict}")
    return out_
