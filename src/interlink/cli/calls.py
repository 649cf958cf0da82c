"""Calls from the command line, bearer tokens, the MCP bridge, approvals."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from ..envelope import body_data
from ..home import MeshHome
from .base import (
    ActingAgent,
    AgentName,
    HomeOption,
    app,
    err,
    fail,
    friendly,
    home_store,
    json_argument,
    out,
    run,
)

PANEL = "Calls"


@app.command(rich_help_panel=PANEL)
@friendly
def call(as_agent: ActingAgent,
         target: Annotated[str, typer.Argument(help="The agent to call.")],
         skill: Annotated[str, typer.Argument(help="Its skill (`interlink agents` lists them).")],
         data: Annotated[str, typer.Argument(metavar="JSON", help="The input, as JSON.")] = "{}",
         home: HomeOption = None,
         timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 30.0,
         hub: Annotated[str | None, typer.Option(help="Hub URL (default from the credential).")]
         = None) -> None:
    """Call TARGET's SKILL with JSON input, as the enrolled agent AS_AGENT.

    Example: interlink call ideator drafter draft '{"topic": "agent meshes"}'"""
    from ..sdk import connect
    payload = json_argument(data)
    mesh = MeshHome(home)

    async def go() -> Any:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            return await m.call(target, skill, payload, timeout=timeout)

    started = time.perf_counter()
    result = run(go())
    out.print_json(json.dumps(result))
    took = 1000 * (time.perf_counter() - started)
    err.print(f"[dim]{target}.{skill} answered in {took:.1f} ms[/]")


@app.command(rich_help_panel=PANEL)
@friendly
def token(agent: AgentName, home: HomeOption = None,
          days: Annotated[float, typer.Option(help="How long the token is valid.")] = 30.0
          ) -> None:
    """Issue a bearer token that lets an outside client (an A2A or ACP client) act as the
    enrolled AGENT at the hub's protocol edges; the gate applies AGENT's grants.

    Example: TOKEN=$(interlink token ideator)"""
    from ..identity import issue_token
    mesh = MeshHome(home)
    if not mesh.load_policy().enrolled(agent):
        raise fail(f"{agent!r} is not enrolled", f"`interlink agent add {agent}` first", code=2)
    print(issue_token(mesh.hub_key(), agent, days=days))
    err.print(f"[dim]bearer token for {agent}, valid {days:g} days; send it as "
              "`Authorization: Bearer <token>`; it acts with exactly this agent's grants[/]")


@app.command(rich_help_panel=PANEL)
@friendly
def mcp(agent: Annotated[str, typer.Option("--agent", help="The enrolled agent the MCP host "
                                                        "acts as (its grants apply).")],
        home: HomeOption = None,
        hub: Annotated[str | None, typer.Option(help="Hub URL (default from the credential).")]
        = None,
        http: Annotated[bool, typer.Option(
            "--http", help="Serve streamable HTTP instead of stdio.")] = False,
        host: Annotated[str, typer.Option(help="With --http: address to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="With --http: port to bind.")] = 7751) -> None:
    """Run an MCP server that acts as the enrolled AGENT: an MCP host (an IDE, a desktop
    assistant) joins the mesh as a scoped, audited agent — list agents, call skills, publish,
    read and write memory, as far as AGENT's grants allow.

    Example: interlink mcp --agent assistant --home /abs/path/.interlink"""
    from ..edges.mcp import serve_http, serve_stdio
    mesh = MeshHome(home)
    mesh.require()
    if http:
        err.print(f"MCP (streamable HTTP) as [bold]{agent}[/] on http://{host}:{port}/mcp")
        run(serve_http(mesh, agent, hub=hub, host=host, port=port))
    else:
        run(serve_stdio(mesh, agent, hub=hub))


@app.command(rich_help_panel=PANEL)
@friendly
def approvals(home: HomeOption = None) -> None:
    """Calls held for approval (untrusted input to a `needs_approval` skill).

    Example: interlink approvals"""
    from ..services.calls import CallRecord
    mesh = MeshHome(home)

    async def read() -> list[CallRecord]:
        async with home_store(mesh) as store:
            kv = await store.kv("calls")
            return [r for r in (CallRecord.model_validate_json(e.value or b"{}")
                                for e in await kv.items("")) if r.state == "held"]

    held = run(read())
    if not held:
        out.print("[dim]nothing is waiting for approval[/]")
        return
    table = Table(title="held for approval")
    for column in ("call", "from", "to", "input (what it would do)", "why", "data came from",
                   "expires in"):
        table.add_column(column)
    for rec in held:
        label = (rec.held or {}).get("label") or {}
        body = ((rec.held or {}).get("wire") or {}).get("body") or {}
        try:
            shown = json.dumps(body_data(body), ensure_ascii=False)
        except ValueError:
            shown = json.dumps(body, ensure_ascii=False)
        table.add_row(rec.id, rec.caller, f"{rec.target}.{rec.skill}",
                      rich_escape(shown[:120] + ("…" if len(shown) > 120 else "")),
                      rich_escape(str((rec.held or {}).get("rule"))),
                      ", ".join(label.get("provenance") or []),
                      f"{max(0.0, rec.deadline - time.time()):.0f}s")
    out.print(table)
    out.print("decide: [bold]interlink approve CALL --as APPROVER[/] (or --refuse)")


@app.command(rich_help_panel=PANEL)
@friendly
def approve(call_id: Annotated[str, typer.Argument(
                metavar="CALL", help="The held call's id (`interlink approvals`).")],
            as_agent: Annotated[str, typer.Option(
                "--as", help="The enrolled approver (granted `approve` for the target).")],
            home: HomeOption = None,
            refuse: Annotated[bool, typer.Option("--refuse", help="Refuse it instead.")]
            = False,
            reason: Annotated[str, typer.Option(help="Why, for the audit.")] = "",
            hub: Annotated[str | None, typer.Option(help="Hub URL (default from the "
                                                         "credential).")] = None) -> None:
    """Approve (or refuse) a call held for approval; the decision is audited.

    Example: interlink approve 3f2a… --as human --reason "invoice matches the order"
    """
    from ..sdk import connect
    mesh = MeshHome(home)

    async def go() -> None:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            await m.approve(call_id, approve=not refuse, reason=reason)

    run(go())
    out.print(f"[green]✓[/] call {call_id} {'refused' if refuse else 'approved'} by {as_agent}")
