"""What crossed the mesh, from the hub's trace store: `interlink trace CONVERSATION` (a
timeline, `--json`, `--mermaid`) and the traffic view of `interlink tail`."""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from ..home import MeshHome
from .base import (
    HomeOption,
    app,
    err,
    fail,
    follow_log,
    friendly,
    home_store,
    interruptible,
    out,
    run,
)

PANEL = "Observability"


@app.command(rich_help_panel=PANEL)
@friendly
def trace(conversation: Annotated[str, typer.Argument(help="The conversation id.")],
          home: HomeOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the spans as JSON.")]
          = False,
          mermaid: Annotated[bool, typer.Option(
              "--mermaid", help="Print a Mermaid sequence diagram instead.")] = False
          ) -> None:
    """A conversation as a timeline across agents: every call, reply, event and memory
    operation the gate decided, when, how long, with its labels, and refusals with the rule.

    Example: interlink trace 3f2a… --mermaid > run.mmd"""
    from ..services.traces import conversation_spans, traces_log
    mesh = MeshHome(home)

    async def read() -> list[dict[str, Any]]:
        async with home_store(mesh) as store:
            return await conversation_spans(
                await traces_log(store, mesh.load_policy().hub), conversation)
    spans = run(read())
    if not spans:
        raise fail(f"no spans for conversation {conversation!r}",
                   "check the id (`interlink tail` shows conversations as they pass); spans "
                   "are kept hub.trace_retention_seconds, and not at all with hub.tracing off")
    if as_json:
        out.print_json(json.dumps(spans))
    elif mermaid:
        out.print(sequence_diagram(spans), highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(timeline(conversation, spans))


def crossing(span: dict[str, Any]) -> tuple[str, str, str]:
    """(from, to, what) of a span, for people."""
    a = span.get("attributes") or {}
    kind, sender, target = a.get("interlink.kind"), a.get("interlink.sender"), a.get(
        "interlink.target")
    if kind == "call":
        agent, _, skill = str(target).partition(".")
        return str(sender), agent, f"call {skill}"
    if kind in ("reply", "progress"):
        return str(sender), str(target), str(kind)
    if kind == "publish":
        return str(sender), "topic " + str(target), "publish"
    if kind is None:
        return "?", "hub", span.get("name", "frame")
    return str(sender), "hub", f"{kind} {target}"


def timeline(conversation: str, spans: list[dict[str, Any]]) -> Table:
    began = spans[0]["start"]
    table = Table(title=f"conversation {rich_escape(conversation)}", title_justify="left")
    for column in ("at", "took", "from", "to", "what", "verdict", "label"):
        table.add_column(column, justify="right" if column in ("at", "took") else "left")
    for span in spans:
        a = span.get("attributes") or {}
        who, to, what = crossing(span)
        if a.get("interlink.decision") == "refused":
            verdict = (f"[red]refused at {a.get('interlink.stage')} "
                       f"({a.get('interlink.code')})[/]")
            if a.get("interlink.rule"):
                verdict += f"\n[dim]rule: {rich_escape(str(a['interlink.rule']))}[/]"
        else:
            verdict = "[green]accepted[/]"
        label = _label(a.get("interlink.label"))
        table.add_row(f"+{(span['start'] - began) * 1000:.1f} ms",
                      f"{(span['end'] - span['start']) * 1000:.1f} ms",
                      rich_escape(who), rich_escape(to), rich_escape(what), verdict,
                      rich_escape(label))
    return table


def _label(raw: Any) -> str:
    try:
        label = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return ""
    parts = [str(label.get("sensitivity") or "")] + [str(c) for c in label.get("categories", [])]
    return " ".join(p for p in parts if p and p != "public")


_MERMAID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@ -]")


def sequence_diagram(spans: list[dict[str, Any]]) -> str:
    """Mermaid `sequenceDiagram` text: participants and messages are escaped, never raw."""
    def name(value: str) -> str:
        return _MERMAID_UNSAFE.sub("_", value)[:64] or "_"

    lines = ["sequenceDiagram"]
    for span in spans:
        a = span.get("attributes") or {}
        who, to, what = crossing(span)
        arrow = "-x" if a.get("interlink.decision") == "refused" else "->>"
        text = name(what)
        if a.get("interlink.decision") == "refused":
            text += f" refused at {name(str(a.get('interlink.stage')))}"
        lines.append(f"    {name(who)}{arrow}{name(to)}: {text}")
    return "\n".join(lines)


def traffic_line(span: dict[str, Any]) -> str:
    a = span.get("attributes") or {}
    who, to, what = crossing(span)
    when = time.strftime("%H:%M:%S", time.localtime(span["start"]))
    when += f".{int(span['start'] % 1 * 1000):03d}"
    took = f"{(span['end'] - span['start']) * 1000:.1f}ms"
    if a.get("interlink.decision") == "refused":
        verdict = (f"[red]refused at {a.get('interlink.stage')} ({a.get('interlink.code')})"
                   + (f" rule {rich_escape(str(a['interlink.rule']))}"
                      if a.get("interlink.rule") else "") + "[/]")
    else:
        verdict = "[green]ok[/]"
    conversation = str(a.get("gen_ai.conversation.id", ""))[:12]
    return (f"{when} [dim]{took:>8} {rich_escape(conversation):<12}[/] "
            f"[bold]{rich_escape(who)}[/] → {rich_escape(to)} [cyan]{rich_escape(what)}[/] "
            f"{verdict}")


def wanted(span: dict[str, Any], *, agent: str | None, kind: str | None, topic: str | None,
           conversation: str | None, refused: bool) -> bool:
    from ..names import matches
    a = span.get("attributes") or {}
    if refused and a.get("interlink.decision") != "refused":
        return False
    if kind and a.get("interlink.kind") != kind:
        return False
    if conversation and a.get("gen_ai.conversation.id") != conversation:
        return False
    if agent and agent not in (a.get("interlink.sender"),
                               str(a.get("interlink.target", "")).partition(".")[0]):
        return False
    if topic and not (a.get("interlink.kind") in ("publish", "subscribe")
                      and matches(topic, str(a.get("interlink.target")))):
        return False
    return True


def follow_traffic(mesh: MeshHome, *, agent: str | None, kind: str | None,
                   topic: str | None, conversation: str | None, refused: bool,
                   since: float | None, count: int | None, follow: bool) -> None:
    """`interlink tail` without a topic pattern: every crossing as the hub decides it."""
    from ..services.traces import spans_of, traces_log
    if not mesh.load_policy().hub.tracing:
        raise fail("hub.tracing is off in mesh.yaml: the hub keeps no spans to show",
                   "turn it on, or `interlink tail PATTERN` for events")

    def lines(message: Any) -> list[str]:
        return [traffic_line(span) for span in spans_of([message])
                if wanted(span, agent=agent, kind=kind, topic=topic,
                          conversation=conversation, refused=refused)]

    async def go() -> None:
        async with home_store(mesh) as store:
            log_ = await traces_log(store, mesh.load_policy().hub)
            last = await log_.last_seq()
            next_seq = await log_.seq_at(time.time() - since) if since is not None else last + 1
            err.print("[dim]traffic as the hub decides it" + (" (Ctrl-C stops)" if follow else "")
                      + "[/]")
            await follow_log(log_, next_seq, lines, count=count, follow=follow)

    with interruptible():
        run(go())
