"""The `interlink` command: a thin shell over the SDK, the mesh home and the store."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import CallError, ConfigError, ConnectionLost, GateDenied, InterlinkError
from .home import MeshHome
from .store import open_store

app = typer.Typer(help="Interlink: the communication layer between AI agents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
agent_app = typer.Typer(help="Enrol and manage agents.", no_args_is_help=True)
audit_app = typer.Typer(help="Check and read the audit chain.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(audit_app, name="audit")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

HomeOption = Annotated[Path | None, typer.Option(
    "--home", envvar="INTERLINK_HOME", help="The mesh home folder (default ./.interlink).")]


def fail(what: str, hint: str | None = None, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {what}", highlight=False)
    if hint:
        err.print(f"[dim]→ {hint}[/]", highlight=False)
    return typer.Exit(code)


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn Interlink errors into a readable message and a non-zero exit code."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except GateDenied as exc:
            raise fail(f"refused by the hub at [bold]{exc.stage}[/] ({exc.code}): {exc.reason}",
                       f"rule: {exc.rule}" if exc.rule else None, code=3) from None
        except CallError as exc:
            raise fail(f"the call failed ({exc.code}): {exc.reason}", code=4) from None
        except ConnectionLost as exc:
            raise fail(str(exc), "start the hub with `interlink serve`", code=5) from None
        except (ConfigError, InterlinkError) as exc:
            raise fail(str(exc), code=2) from None
    return wrapper


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- init / serve ---------------------------------------------------------------------------

@app.command()
@friendly
def init(home: HomeOption = None,
         force: Annotated[bool, typer.Option(help="Replace an existing home.")] = False,
         port: Annotated[int | None, typer.Option(help="The hub's port (default 7750).")] = None
         ) -> None:
    """Make a mesh home: the hub's key and a deny-all policy (mesh.yaml)."""
    mesh = MeshHome(home)
    hub = mesh.init(force=force, port=port)
    out.print(f"[green]✓[/] mesh home ready at [bold]{mesh.root}[/]")
    out.print(f"  hub key      {mesh.hub_key_path}  (id {hub.id}, owner-only)")
    out.print(f"  policy       {mesh.policy_path}  (default deny)")
    out.print("next: [bold]interlink agent add NAME[/], then [bold]interlink serve[/]")


@app.command()
@friendly
def serve(home: HomeOption = None,
          host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
          port: Annotated[int | None, typer.Option(help="Port to bind.")] = None) -> None:
    """Run the hub (WebSocket at /ws; embedded SQLite store in the home's data/ folder)."""
    from .server import serve as serve_hub
    mesh = MeshHome(home)
    mesh.require()
    policy = mesh.load_policy()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out.print(f"hub for [bold]{mesh.root}[/] on "
              f"ws://{host or policy.hub.host}:{port or policy.hub.port}/ws "
              f"(store {mesh.db_path}); Ctrl-C stops it")
    serve_hub(mesh, host=host, port=port)


# -- agents ---------------------------------------------------------------------------------

@agent_app.command("add")
@friendly
def agent_add(name: str, home: HomeOption = None,
              description: Annotated[str, typer.Option(help="What the agent does.")] = "",
              call: Annotated[list[str] | None, typer.Option(
                  "--call", help="Grant a call pattern (agent.skill), repeatable.")] = None,
              days: Annotated[float, typer.Option(help="Credential lifetime in days.")] = 365,
              renew: Annotated[bool, typer.Option(help="Issue a new key and credential.")] = False
              ) -> None:
    """Enrol an agent: its key pair and hub-signed credential, and a policy entry."""
    mesh = MeshHome(home)
    path = mesh.add_agent(name, description=description, calls=call or [], days=days,
                          renew=renew)
    out.print(f"[green]✓[/] enrolled [bold]{name}[/]; credential at {path} (owner-only)")
    grants = ", ".join(call or []) or "none (default deny)"
    out.print(f"  may call: {grants}; edit {mesh.policy_path} to grant more")


@agent_app.command("grant")
@friendly
def agent_grant(name: str, home: HomeOption = None,
                call: Annotated[list[str], typer.Option(
                    "--call", help="A call pattern (agent.skill), repeatable.")] = [],  # noqa: B006
                publish: Annotated[list[str], typer.Option(
                    "--publish", help="A topic pattern it may publish to, repeatable.")
                ] = [],  # noqa: B006
                subscribe: Annotated[list[str], typer.Option(
                    "--subscribe", help="A topic pattern it may subscribe to, repeatable.")
                ] = [],  # noqa: B006
                ) -> None:
    """Grant an enrolled agent more rights (the running hub picks them up at once)."""
    if not (call or publish or subscribe):
        raise fail("nothing to grant",
                   "give --call agent.skill, --publish topic or --subscribe pattern")
    MeshHome(home).grant(name, calls=call, publish=publish, subscribe=subscribe)
    for right, given in (("call", call), ("publish to", publish), ("subscribe to", subscribe)):
        if given:
            out.print(f"[green]✓[/] {name} may now {right} {', '.join(given)}")


@app.command()
@friendly
def agents(home: HomeOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List enrolled agents: connected or not, and their skills."""
    from .services.registry import Registry
    mesh = MeshHome(home)
    policy = mesh.load_policy()

    async def read() -> list[Any]:
        if not mesh.db_path.exists():
            return await Registry(_EmptyKV()).statuses(policy)
        async with open_store(f"sqlite:///{mesh.db_path}") as store:
            return await Registry(await store.kv("registry")).statuses(policy)

    statuses = run(read())
    if as_json:
        out.print_json(json.dumps([{
            "name": s.name, "connected": s.connected, "description": s.description,
            "skills": [k.id for k in s.card.skills] if s.card else [],
            "calls": policy.agents[s.name].calls} for s in statuses]))
        return
    table = Table(title=f"agents of {mesh.root}")
    for column in ("agent", "state", "skills", "may call", "description"):
        table.add_column(column)
    for s in statuses:
        skills = ", ".join(k.id for k in s.card.skills) if s.card else "[dim](never connected)[/]"
        state = "[green]● connected[/]" if s.connected else "[dim]○ offline[/]"
        table.add_row(s.name, state, skills, ", ".join(policy.agents[s.name].calls) or
                      "[dim]nothing[/]", s.description)
    out.print(table)


class _EmptyKV:
    async def items(self, prefix: str = "") -> list[Any]:
        return []


# -- calls ----------------------------------------------------------------------------------

@app.command()
@friendly
def call(as_agent: Annotated[str, typer.Argument(metavar="AS_AGENT")],
         target: str, skill: str,
         data: Annotated[str, typer.Argument(metavar="JSON", help="The input, as JSON.")] = "{}",
         home: HomeOption = None,
         timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 30.0,
         hub: Annotated[str | None, typer.Option(help="Hub URL (default from the credential).")]
         = None) -> None:
    """Call TARGET's SKILL with JSON input, as the enrolled agent AS_AGENT."""
    from .sdk import connect
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise fail(f"the input is not JSON: {exc}", "quote it: '{\"topic\": \"x\"}'") from None
    mesh = MeshHome(home)

    async def go() -> Any:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            return await m.call(target, skill, payload, timeout=timeout)

    started = time.perf_counter()
    result = run(go())
    out.print_json(json.dumps(result))
    err.print(f"[dim]{target}.{skill} answered in {1000 * (time.perf_counter() - started):.1f} ms[/]")


# -- audit ----------------------------------------------------------------------------------

@audit_app.command("verify")
@friendly
def audit_verify(home: HomeOption = None) -> None:
    """Check the audit chain: exits non-zero naming the first bad record."""
    from .services.audit import verify_chain
    mesh = MeshHome(home)
    key = mesh.hub_key()
    if not mesh.db_path.exists():
        raise fail(f"no store at {mesh.db_path}: the hub has not run yet")

    async def check() -> Any:
        async with open_store(f"sqlite:///{mesh.db_path}") as store:
            return await verify_chain(await store.log("audit"), key.public)

    report = run(check())
    if not report.ok:
        raise fail(f"audit chain broken: {report.problems[0]}",
                   f"{report.records} records verified before it", code=1)
    out.print(f"[green]✓[/] audit chain intact: {report.records} records, "
              f"{report.checkpoints} signed checkpoints (sealed up to record "
              f"{report.sealed_upto}; {report.unsealed} after the last checkpoint)")


@audit_app.command("show")
@friendly
def audit_show(home: HomeOption = None,
               last: Annotated[int, typer.Option(help="How many records.")] = 20) -> None:
    """Print the latest audit records."""
    from .services.audit import RECORD, describe_record
    mesh = MeshHome(home)

    async def read() -> list[dict[str, Any]]:
        async with open_store(f"sqlite:///{mesh.db_path}") as store:
            log_ = await store.log("audit")
            start = max(1, await log_.last_seq() - 2 * last)
            items = await log_.read(start, subject=RECORD, limit=10 * last)
            return [json.loads(m.data) for m in items][-last:]

    for rec in run(read()):
        out.print(describe_record(rec), highlight=False)


# -- demo -----------------------------------------------------------------------------------

@app.command()
@friendly
def demo(home: Annotated[Path, typer.Option(help="Where the demo's mesh home goes.")] =
         Path("interlink-demo")) -> None:
    """The whole story on the embedded store: three agents, a call chain, a refusal."""
    from .demo import run_demo
    code = run(run_demo(home, out))
    raise typer.Exit(code)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
