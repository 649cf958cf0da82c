"""What every command shares: the app and its groups, the consoles, common arguments, and
turning errors into one readable line and an exit code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from ..errors import CallError, ConfigError, ConnectionLost, GateDenied, InterlinkError
from ..home import MeshHome
from ..store import open_store

app = typer.Typer(help="Interlink: the communication layer between AI agents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
agent_app = typer.Typer(help="Enrol and manage agents.", no_args_is_help=True)
audit_app = typer.Typer(help="Check and read the audit chain.", no_args_is_help=True)
memory_app = typer.Typer(help="Read and write shared memory.", no_args_is_help=True)
app.add_typer(agent_app, name="agent", rich_help_panel="Agents and rights")
app.add_typer(memory_app, name="memory", rich_help_panel="Memory")
app.add_typer(audit_app, name="audit", rich_help_panel="Audit")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

HomeOption = Annotated[Path | None, typer.Option(
    "--home", envvar="INTERLINK_HOME", help="The mesh home folder (default ./.interlink).")]
AgentName = Annotated[str, typer.Argument(
    metavar="NAME", help="An enrolled agent's name (`interlink agents` lists them).")]
ActingAgent = Annotated[str, typer.Argument(
    metavar="AS_AGENT", help="The enrolled agent to act as (its credential is in the home).")]
Namespace = Annotated[str, typer.Argument(help="A shared-memory namespace, e.g. blog.")]
MemoryKey = Annotated[str, typer.Argument(metavar="KEY", help="A key in the namespace.")]


def fail(what: str, hint: str | None = None, code: int = 1) -> typer.Exit:
    """Print an error (plain text: `[rule: …]`, YAML and other brackets are shown as they
    are, never taken for markup) and the exit to raise."""
    err.print("[bold red]error:[/] " + rich_escape(what), highlight=False)
    if hint:
        err.print("[dim]→ " + rich_escape(hint) + "[/]", highlight=False)
    return typer.Exit(code)


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn Interlink errors into a readable message and a non-zero exit code."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except GateDenied as exc:
            raise fail(f"refused by the hub at {exc.stage} ({exc.code}): {exc.reason}",
                       f"rule: {exc.rule}" if exc.rule else None, code=3) from None
        except CallError as exc:
            raise fail(f"the call failed ({exc.code}): {exc.reason}", code=4) from None
        except ConnectionLost as exc:
            raise fail(str(exc), "start the hub with `interlink serve`", code=5) from None
        except (ConfigError, InterlinkError) as exc:
            raise fail(str(exc), code=2) from None
        except OSError as exc:  # a file that cannot be read or written, said plainly
            raise fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                       code=2) from None
    return wrapper


def policy_edit(fn: Callable[..., T]) -> Callable[..., T]:
    """For a command that edits mesh.yaml: once it is written, wait (briefly) until the running
    hub of this home has applied it, so that a script's next command already meets the new
    policy. No hub running: nothing to wait for."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        result = fn(*args, **kwargs)
        _wait_until_applied(MeshHome(kwargs.get("home")))
        return result
    return wrapper


def _wait_until_applied(mesh: MeshHome, timeout: float = 3.0) -> None:
    import hashlib

    import httpx
    try:
        policy = mesh.load_policy()
        digest = hashlib.sha256(mesh.policy_path.read_bytes()).hexdigest()
        hub_id = mesh.hub_key().id
    except (ConfigError, OSError):
        return
    url = f"{mesh.hub_http_url(policy)}/healthz"
    verify = mesh.hub_verify(policy)
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = httpx.get(url, timeout=0.5, verify=verify).json()
        except (httpx.HTTPError, ValueError):
            return  # no hub of ours there: the change applies when one starts
        if health.get("hub") != hub_id or health.get("policy") in (None, digest):
            return
        if time.monotonic() >= deadline:
            err.print(f"[yellow]note:[/] the hub at {url.removesuffix('/healthz')} has not "
                      f"applied the change yet; its log says why", highlight=False)
            return
        time.sleep(0.05)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def json_argument(data: str) -> Any:
    """A command-line JSON argument, or a one-line error saying how to quote it."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise fail(f"the input is not JSON: {exc}", "quote it: '{\"topic\": \"x\"}'") from None


async def follow_log(log_: Any, next_seq: int, lines: Callable[[Any], list[str]], *,
                     subject: str = ">", count: int | None = None, follow: bool = True) -> None:
    """Print `lines(message)` for a log's messages from `next_seq` on, then (with `follow`)
    as they land, until `count` lines were printed (`interlink tail`, either view)."""
    shown = 0
    while count is None or shown < count:
        last = await log_.last_seq()
        batch = await log_.read(next_seq, subject=subject, limit=256)
        for message in batch:
            for line in lines(message):
                out.print(line, highlight=False, soft_wrap=True)
                shown += 1
                if count is not None and shown >= count:
                    return
        next_seq = max(next_seq, last + 1) if len(batch) < 256 else batch[-1].seq + 1
        if not follow:
            return
        await log_.wait_for(next_seq - 1, timeout=1.0)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C ends a following command quietly."""
    try:
        yield
    except KeyboardInterrupt:
        err.print("[dim]stopped[/]")


def home_store(mesh: MeshHome) -> Any:
    """The home's store, opened for an operator's read (the hub up or down)."""
    url = mesh.store_url()
    if not mesh.store_exists(url):
        raise fail(f"no store at {mesh.db_path}: the hub has not run yet",
                   "start it with `interlink serve`")
    return open_store(url)
