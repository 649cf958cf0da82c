"""Events: publish, tail, topics."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from ..envelope import body_data
from ..home import MeshHome
from ..services.events import events_log
from .base import (
    ActingAgent,
    HomeOption,
    app,
    err,
    fail,
    follow_log,
    friendly,
    home_store,
    interruptible,
    json_argument,
    out,
    run,
)

PANEL = "Events"


@app.command(rich_help_panel=PANEL)
@friendly
def publish(as_agent: ActingAgent,
            topic: Annotated[str, typer.Argument(help="Dotted topic, e.g. blog.drafts.created.")],
            data: Annotated[str, typer.Argument(metavar="JSON", help="The event, as JSON.")]
            = "{}",
            home: HomeOption = None,
            event_id: Annotated[str | None, typer.Option(
                "--id", help="Event id; publishing the same id again is not a second event.")]
            = None,
            hub: Annotated[str | None, typer.Option(help="Hub URL (default from the credential).")]
            = None) -> None:
    """Publish an event on TOPIC as the enrolled agent AS_AGENT.

    Example: interlink publish drafter blog.drafts.created '{"title": "x"}'"""
    from ..sdk import connect
    payload = json_argument(data)
    mesh = MeshHome(home)

    async def go() -> dict[str, Any]:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            return await m.publish(topic, payload, event_id=event_id)

    answer = run(go())
    again = " [yellow](a duplicate: the first publish of this id stands)[/]" \
        if answer.get("duplicate") else ""
    out.print(f"[green]✓[/] published [bold]{answer['topic']}[/] #{answer['topic_seq']} "
              f"(log seq {answer['seq']}){again}")


@app.command(rich_help_panel=PANEL)
@friendly
def tail(pattern: Annotated[str | None, typer.Argument(
             help="A topic pattern (* one token, > the rest): show those events with their "
                  "data. Without one, show all traffic.")] = None,
         home: HomeOption = None,
         agent: Annotated[str | None, typer.Option(
             help="Traffic from or to this agent.")] = None,
         kind: Annotated[str | None, typer.Option(
             help="Traffic of this kind: call, reply, publish, memory, hello, ...")] = None,
         topic: Annotated[str | None, typer.Option(
             help="Publishes and subscriptions on topics matching this pattern.")] = None,
         conversation: Annotated[str | None, typer.Option(
             help="Traffic of this conversation.")] = None,
         refused: Annotated[bool, typer.Option(
             "--refused", help="Refusals only (with the stage, code and rule).")] = False,
         from_seq: Annotated[int | None, typer.Option(
             "--from-seq", help="Events: start at this log sequence (1 = everything).")]
         = None,
         since: Annotated[float | None, typer.Option(
             help="Start this many seconds ago.")] = None,
         count: Annotated[int | None, typer.Option(help="Stop after this many lines.")] = None,
         follow: Annotated[bool, typer.Option(help="Keep waiting for more.")] = True
         ) -> None:
    """Follow the mesh live: every call, reply, event, memory operation and refusal as the hub
    decides it (filter by agent, kind, topic, conversation, refusals) — or, given a topic
    pattern, the events on those topics with their data.

    Example: interlink tail --refused      interlink tail 'blog.>' --from-seq 1 --no-follow"""
    from ..names import matches, pattern_error
    mesh = MeshHome(home)
    if pattern is None:
        from .traces import follow_traffic
        for given in (topic,):
            if given is not None and (problem := pattern_error(given)):
                raise fail(problem, "e.g. `interlink tail --topic 'blog.>'`", code=2)
        follow_traffic(mesh, agent=agent, kind=kind, topic=topic, conversation=conversation,
                       refused=refused, since=since, count=count, follow=follow)
        return
    if problem := pattern_error(pattern):
        raise fail(problem, "e.g. `interlink tail 'blog.>'`", code=2)
    settings = mesh.load_policy().hub

    async def go() -> None:
        async with home_store(mesh) as store:
            log_ = await events_log(store, settings)
            last = await log_.last_seq()
            next_seq = (from_seq if from_seq is not None else
                        await log_.seq_at(time.time() - since) if since is not None else last + 1)
            err.print(f"[dim]events matching {pattern} from log seq {next_seq}"
                      + (" (Ctrl-C stops)" if follow else "") + "[/]")
            await follow_log(log_, next_seq, lambda message: [_event_line(message)]
                             if matches(pattern, message.subject) else [],
                             subject=pattern, count=count, follow=follow)

    with interruptible():
        run(go())


@app.command(rich_help_panel=PANEL)
@friendly
def topics(home: HomeOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Topics with their event counts and schemas; durable consumers with their lag.

    Example: interlink topics"""
    mesh = MeshHome(home)
    settings = mesh.load_policy().hub

    async def read() -> tuple[dict[str, int], list[Any], dict[str, int]]:
        async with home_store(mesh) as store:
            log_ = await events_log(store, settings)
            schemas = {e.key: len(json.loads(e.value or b"{}").get("versions", []))
                       for e in await (await store.kv("schemas")).items()}
            return await log_.subjects(), await log_.consumers(), schemas

    counts, consumers, schemas = run(read())
    if as_json:
        out.print_json(json.dumps({
            "topics": [{"topic": t, "events": n, "schema_version": schemas.get(t)}
                       for t, n in sorted(counts.items())],
            "consumers": [{"name": c.name, "filter": c.filter, "delivered": c.delivered_seq,
                           "ack_pending": c.ack_pending, "lag": c.num_pending,
                           "redelivered": c.redelivered, "dead_lettered": c.dead_lettered}
                          for c in consumers]}))
        return
    table = Table(title="topics")
    for column in ("topic", "events", "schema"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for topic, n in sorted(counts.items()):
        table.add_row(topic, str(n), f"v{schemas[topic]}" if topic in schemas else "[dim]none[/]")
    out.print(table if counts else "[dim]no events yet[/]")
    table = Table(title="durable consumers")
    for column in ("consumer", "follows", "lag", "unacked", "redelivered", "dead letters"):
        table.add_column(column, justify="left" if column in ("consumer", "follows") else "right")
    for c in consumers:
        lag = f"[yellow]{c.num_pending}[/]" if c.num_pending else "0"
        dead = f"[red]{c.dead_lettered}[/]" if c.dead_lettered else "0"
        table.add_row(c.name, c.filter, lag, str(c.ack_pending), str(c.redelivered), dead)
    out.print(table if consumers else "[dim]no durable consumers yet[/]")


def _event_line(message: Any) -> str:
    item = json.loads(message.data)
    wire = item["wire"]
    try:
        data: Any = body_data(wire.get("body") or {})
    except ValueError:
        data = wire.get("body")
    text = json.dumps(data, ensure_ascii=False)
    if len(text) > 160:
        text = text[:157] + "..."
    when = time.strftime("%H:%M:%S", time.localtime(message.ts))
    when += f".{int(message.ts % 1 * 1000):03d}"
    number = message.headers.get("topic_seq")
    where = f"{message.subject}#{number}" if number else message.subject
    dead = (f" [red](dead letter: {message.headers.get('reason')} after "
            f"{message.headers.get('deliveries')} deliveries)[/]"
            if "reason" in message.headers else "")
    return (f"[dim]{message.seq:>6}[/] {when} [bold cyan]{where}[/] "
            f"[green]{wire.get('sender')}[/] {rich_escape(text)}{dead}")
