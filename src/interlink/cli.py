"""The `interlink` command: a thin shell over the SDK, the mesh home and the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from .envelope import body_data
from .errors import CallError, ConfigError, ConnectionLost, GateDenied, InterlinkError
from .home import MeshHome
from .labels import Label
from .store import open_store

app = typer.Typer(help="Interlink: the communication layer between AI agents.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
agent_app = typer.Typer(help="Enrol and manage agents.", no_args_is_help=True)
audit_app = typer.Typer(help="Check and read the audit chain.", no_args_is_help=True)
memory_app = typer.Typer(help="Read and write shared memory.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(audit_app, name="audit")
app.add_typer(memory_app, name="memory")

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
    url = f"http://{policy.hub.host}:{policy.hub.port}/healthz"
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = httpx.get(url, timeout=0.5).json()
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


# -- init / serve ---------------------------------------------------------------------------

@app.command()
@friendly
def init(home: HomeOption = None,
         force: Annotated[bool, typer.Option(help="Replace an existing home.")] = False,
         port: Annotated[int | None, typer.Option(help="The hub's port (default 7750).")] = None
         ) -> None:
    """Make a mesh home: the hub's key and a deny-all policy (mesh.yaml).

    Example: interlink init --home ./mesh"""
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
          port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
          accept_audit_gap: Annotated[bool, typer.Option(
              help="Start even though the store's audit chain no longer reaches its signed "
                   "head (records were cut off); the gap is recorded in the chain for good.")]
          = False,
          log_level: Annotated[str, typer.Option(
              help="debug (every accepted envelope too), info (connections and refusals), "
                   "warning or error.")] = "info",
          log_format: Annotated[str, typer.Option(
              help="text, or json (one object per line, for log shippers).")] = "text",
          ) -> None:
    """Run the hub (WebSocket at /ws; embedded SQLite store in the home's data/ folder).

    Example: interlink serve --port 7750 --log-format json"""
    from .logs import configure
    from .server import serve as serve_hub
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise fail(f"--log-level {log_level!r}: use debug, info, warning or error", code=2)
    if log_format not in ("text", "json"):
        raise fail(f"--log-format {log_format!r}: use text or json", code=2)
    mesh = MeshHome(home)
    mesh.require()
    policy = mesh.load_policy()
    configure(log_level, log_format)
    out.print(f"hub for [bold]{mesh.root}[/] on "
              f"ws://{host or policy.hub.host}:{port or policy.hub.port}/ws "
              f"(store {mesh.db_path}); Ctrl-C stops it")
    serve_hub(mesh, host=host, port=port, accept_audit_gap=accept_audit_gap,
              log_level=log_level.lower())


# -- agents ---------------------------------------------------------------------------------

@agent_app.command("add")
@friendly
@policy_edit
def agent_add(name: Annotated[str, typer.Argument(
                  metavar="NAME", help="The new agent's name (letters, digits, - and _).")],
              home: HomeOption = None,
              description: Annotated[str, typer.Option(help="What the agent does.")] = "",
              call: Annotated[list[str] | None, typer.Option(
                  "--call", help="Grant a call pattern (agent.skill), repeatable.")] = None,
              days: Annotated[float, typer.Option(help="Credential lifetime in days.")] = 365,
              renew: Annotated[bool, typer.Option(help="Issue a new key and credential.")] = False,
              a2a: Annotated[str | None, typer.Option(
                  "--a2a", help="The agent lives elsewhere and speaks A2A at this URL; the hub "
                                "calls it for the mesh.")] = None,
              card_key: Annotated[str | None, typer.Option(
                  help="With --a2a: PEM public key file its Agent Card must be signed with.")]
              = None,
              token_env: Annotated[str | None, typer.Option(
                  help="With --a2a: environment variable of the hub holding a bearer token "
                       "for calling it.")] = None,
              ) -> None:
    """Enrol an agent: its key pair and hub-signed credential, and a policy entry.

    Example: interlink agent add drafter --call editor.review --description "writes drafts"
    """
    mesh = MeshHome(home)
    remote = None
    _check_call_patterns(call or [])
    if card_key and not card_key.lstrip().startswith("-----BEGIN"):
        key_path = Path(card_key).expanduser()
        if not key_path.is_absolute():
            key_path = Path.cwd() / key_path
        if not key_path.is_file():
            raise fail(f"--card-key {card_key}: no such file", "give the PEM public key file "
                       "the remote agent signs its card with", code=2)
        card_key = str(key_path)
    if a2a:
        remote = {"url": a2a, "card_key": card_key, "token_env": token_env}
    elif card_key or token_env:
        raise fail("--card-key and --token-env go with --a2a URL", code=2)
    path = mesh.add_agent(name, description=description, calls=call or [], days=days,
                          renew=renew, a2a=remote)
    if a2a:
        out.print(f"[green]✓[/] enrolled remote A2A agent [bold]{name}[/] at {a2a}; the hub "
                  "resolves its card and serves its skills to the mesh (within ~10 s if it "
                  "is running)")
        return
    out.print(f"[green]✓[/] enrolled [bold]{name}[/]; credential at {path} (owner-only)")
    grants = ", ".join(call or []) or "none (default deny)"
    out.print(f"  may call: {grants}; edit {mesh.policy_path} to grant more")


def _check_call_patterns(patterns: list[str]) -> None:
    """A call grant is agent.skill: say so as an argument error, before touching mesh.yaml."""
    for pattern in patterns:
        agent, dot, skill = pattern.partition(".")
        if not dot or not agent or not skill:
            raise typer.BadParameter(f"{pattern!r} is not agent.skill (patterns allowed: "
                                     "editor.review, editor.*, *.review)", param_hint="--call")


@agent_app.command("grant")
@friendly
@policy_edit
def agent_grant(name: AgentName, home: HomeOption = None,
                call: Annotated[list[str], typer.Option(
                    "--call", help="A call pattern (agent.skill), repeatable.")] = [],  # noqa: B006
                publish: Annotated[list[str], typer.Option(
                    "--publish", help="A topic pattern it may publish to, repeatable.")
                ] = [],  # noqa: B006
                subscribe: Annotated[list[str], typer.Option(
                    "--subscribe", help="A topic pattern it may subscribe to, repeatable.")
                ] = [],  # noqa: B006
                memory: Annotated[list[str], typer.Option(
                    "--memory", help="NAMESPACE=read or NAMESPACE=read-write (namespace "
                                     "patterns allowed), repeatable.")] = [],  # noqa: B006
                ) -> None:
    """Grant an enrolled agent more rights (the running hub picks them up at once).

    Example: interlink agent grant drafter --publish 'blog.*' --memory blog=read"""
    if not (call or publish or subscribe or memory):
        raise fail("nothing to grant", "give --call agent.skill, --publish topic, "
                   "--subscribe pattern or --memory namespace=read-write")
    _check_call_patterns(call)
    spaces: dict[str, str] = {}
    for item in memory:
        namespace, _, access = item.partition("=")
        if access not in ("read", "read-write") or not namespace:
            raise fail(f"--memory {item!r}: say NAMESPACE=read or NAMESPACE=read-write", code=2)
        spaces[namespace] = access
    MeshHome(home).grant(name, calls=call, publish=publish, subscribe=subscribe, memory=spaces)
    for right, given in (("call", call), ("publish to", publish), ("subscribe to", subscribe),
                         ("use memory", [f"{k} ({v})" for k, v in spaces.items()])):
        if given:
            out.print(f"[green]✓[/] {name} may now {right} {', '.join(given)}")


@agent_app.command("suspend")
@friendly
@policy_edit
def agent_suspend(name: AgentName, home: HomeOption = None) -> None:
    """The kill switch: refuse all of NAME's traffic and deliver nothing to it; calls waiting
    for it fail at once (the running hub acts within a second).

    Example: interlink agent suspend scout"""
    MeshHome(home).set_suspended(name, True)
    out.print(f"[red]■[/] {name} is suspended: the hub refuses everything it sends, delivers "
              "nothing to it and fails the calls waiting for it; "
              f"`interlink agent restore {name}` lets it back")


@agent_app.command("revoke")
@friendly
@policy_edit
def agent_revoke(name: AgentName, home: HomeOption = None,
                 call: Annotated[list[str], typer.Option(
                     "--call", help="A call grant to take back, as written in mesh.yaml.")
                 ] = [],  # noqa: B006
                 publish: Annotated[list[str], typer.Option(
                     "--publish", help="A publish grant to take back.")] = [],  # noqa: B006
                 subscribe: Annotated[list[str], typer.Option(
                     "--subscribe", help="A subscribe grant to take back.")] = [],  # noqa: B006
                 memory: Annotated[list[str], typer.Option(
                     "--memory", help="A memory namespace pattern to take back.")
                 ] = [],  # noqa: B006
                 ) -> None:
    """Take rights back from an agent (the running hub applies it at once; audited).

    Example: interlink agent revoke drafter --call editor.review --memory blog"""
    if not (call or publish or subscribe or memory):
        raise fail("nothing to take back", "give --call, --publish, --subscribe or --memory")
    missing = MeshHome(home).take_back(name, calls=call, publish=publish, subscribe=subscribe,
                                       memory=memory)
    taken = [x for x in [*call, *publish, *subscribe, *memory]
             if not any(m.endswith(f": {x}") for m in missing)]
    if taken:
        out.print(f"[green]✓[/] {name} no longer has: {', '.join(taken)}", highlight=False)
    if missing:
        raise fail(f"{name} did not have: {', '.join(missing)}",
                   "grants are removed as written in mesh.yaml (`interlink agents --json`)")


@agent_app.command("remove")
@friendly
@policy_edit
def agent_remove(name: AgentName, home: HomeOption = None) -> None:
    """Take an agent off the mesh: its policy entry goes, its credential is revoked (its
    connections close) and its credential file is deleted.

    Example: interlink agent remove scout"""
    cred = MeshHome(home).remove_agent(name)
    out.print(f"[green]✓[/] {name} is removed" + (f"; credential {cred} revoked" if cred
                                                  else ""), highlight=False)


@agent_app.command("set")
@friendly
@policy_edit
def agent_set(name: AgentName, home: HomeOption = None,
              clearance: Annotated[str | None, typer.Option(
                  help="LEVEL[+TAG...]: what it may be given, e.g. confidential+phi.")] = None,
              label: Annotated[str | None, typer.Option(
                  help="LEVEL[+TAG...]: a floor for everything it sends.")] = None,
              untrusted_from: Annotated[str | None, typer.Option(
                  help="Mark everything it sends untrusted, from ORIGIN (e.g. web).")] = None,
              sensitive: Annotated[list[str], typer.Option(
                  help="A skill (pattern) that refuses untrusted input.")] = [],  # noqa: B006
              needs_approval: Annotated[list[str], typer.Option(
                  help="A skill that holds untrusted input for an approver.")
              ] = [],  # noqa: B006
              approve: Annotated[list[str], typer.Option(
                  help="An agent (pattern) whose held calls it may decide.")
              ] = [],  # noqa: B006
              endorse: Annotated[list[str], typer.Option(
                  help="An agent whose context it may vouch for.")] = [],  # noqa: B006
              declassify: Annotated[list[str], typer.Option(
                  help="An agent whose context it may declassify.")] = [],  # noqa: B006
              taint_scope: Annotated[str | None, typer.Option(
                  help="agent (default) or conversation.")] = None,
              rate: Annotated[float | None, typer.Option(
                  help="Envelopes per second it may send.")] = None,
              description: Annotated[str | None, typer.Option(help="What it does.")] = None,
              ) -> None:
    """Set an agent's clearance, label, sensitive skills, approvals and limits (what the README
    otherwise has you edit by hand). Lists are added to; `agent revoke` takes grants back.

    Example: interlink agent set records --clearance confidential+phi --sensitive patient_record"""
    def level_tags(text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        level, *tags = text.split("+")
        return {"level": level, **({"tags": tags} if tags else {})}
    floor = level_tags(label) or {}
    if untrusted_from:
        floor = {**floor, "integrity": "untrusted", "provenance": [untrusted_from]}
    settings = {"clearance": level_tags(clearance), "label": floor or None,
                "sensitive": sensitive, "needs_approval": needs_approval, "approve": approve,
                "endorse": endorse, "declassify": declassify, "taint_scope": taint_scope,
                "rate": rate, "description": description}
    if all(v in (None, []) for v in settings.values()):
        raise fail("nothing to set", "see `interlink agent set --help`")
    MeshHome(home).set_agent(name, **settings)
    out.print(f"[green]✓[/] {name}: " + ", ".join(
        f"{k} {v}" for k, v in settings.items() if v not in (None, [])), highlight=False)


@app.command()
@friendly
@policy_edit
def revoke(what: Annotated[list[str], typer.Argument(
               help="A credential file or id (cred-…), a bearer token or its id (tok-…), a "
                    "delegation token or its revocation id.")],
           home: HomeOption = None) -> None:
    """Refuse credentials, bearer tokens or delegations before they expire (mesh.yaml
    `revoked:`; the running hub applies it at once and closes connections that use a revoked
    credential; audited).

    Example: interlink revoke .interlink/agents/drafter.cred"""
    from .identity import CredentialFile, token_id
    mesh = MeshHome(home)
    ids: list[str] = []
    for item in what:
        if _is_file(item):
            ids.append(CredentialFile.load(Path(item)).credential.id)
        elif item.startswith(("cred-", "tok-")):
            ids.append(item)
        elif item.count(".") == 2 and (jti := token_id(item)):
            ids.append(jti)
        elif all(c in "0123456789abcdef" for c in item) and len(item) >= 32:
            ids.append(item)
        else:
            ids.append(_delegation_id(mesh, item))
    added = mesh.revoke(ids)
    for item in ids:
        out.print(f"[green]✓[/] revoked {item}" if item in added else
                  f"[dim]already revoked: {item}[/]", highlight=False)


def _is_file(item: str) -> bool:
    try:
        return Path(item).is_file()
    except OSError:  # e.g. a token, far longer than a file name can be
        return False


def _delegation_id(mesh: MeshHome, token: str) -> str:
    """The revocation id of a delegation token's last block (this token and what is derived
    from it; the token it was narrowed from stays valid)."""
    from .delegation import revocation_ids
    try:
        return revocation_ids(token, mesh.hub_key().public)[-1]
    except Exception:
        raise fail(f"{token[:40]!r} is not a credential, token or delegation of this hub",
                   "give a .cred file, cred-…, a bearer token, tok-…, or a delegation token",
                   code=2) from None


@agent_app.command("restore")
@friendly
@policy_edit
def agent_restore(name: AgentName, home: HomeOption = None) -> None:
    """Lift a suspension or quarantine.

    Example: interlink agent restore scout"""
    MeshHome(home).set_suspended(name, False)
    out.print(f"[green]✓[/] {name} is restored")


@agent_app.command("clear-taint")
@friendly
def agent_clear_taint(
        name: AgentName, home: HomeOption = None,
        by: Annotated[str, typer.Option(help="Who clears it (for the audit).")] =
        os.environ.get("USER", "operator"),
        reason: Annotated[str, typer.Option(help="Why (for the audit).")] = "",
        hub: Annotated[str | None, typer.Option(help="The hub's HTTP URL (default from "
                                                     "mesh.yaml).")] = None) -> None:
    """Forget everything NAME was given (its context taint), e.g. after its runtime was
    restarted from a clean context. The running hub does it and audits who and why.

    Example: interlink agent clear-taint drafter --by alice --reason "context reset"
    """
    import httpx

    from .identity import ADMIN_AUDIENCE, issue_token
    mesh = MeshHome(home)
    policy = mesh.load_policy()
    base = hub or f"http://{policy.hub.host}:{policy.hub.port}"
    token = issue_token(mesh.hub_key(), "operator", days=60 / 86400, audience=ADMIN_AUDIENCE)
    try:
        response = httpx.post(f"{base.rstrip('/')}/admin/agents/{name}/clear-taint",
                              json={"by": by, "reason": reason},
                              headers={"authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the hub at {base} ({exc})",
                   "the hub must be running to clear taint: `interlink serve`", code=5) from None
    if response.status_code != 200:
        try:
            reason_text = response.json()["error"]["reason"]
        except (ValueError, KeyError, TypeError):
            reason_text = response.text[:200]
        raise fail(f"the hub refused: {reason_text}", code=3)
    before = response.json().get("before") or {}
    out.print(f"[green]✓[/] {name}'s context taint is cleared (it was "
              f"{before.get('level', 'public')}"
              + (f" +{'+'.join(before['tags'])}" if before.get("tags") else "")
              + f", {before.get('integrity', 'trusted')}"
              + (f" from {', '.join(before['provenance'])}" if before.get("provenance") else "")
              + ")", highlight=False)


@app.command()
@friendly
def agents(home: HomeOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List enrolled agents: connected or not, and their skills.

    Example: interlink agents --json"""
    from .services.registry import AgentStatus, Registry
    mesh = MeshHome(home)
    policy = mesh.load_policy()

    async def read() -> list[Any]:
        if not mesh.db_path.exists():  # the hub never ran: enrolled, never connected
            return [AgentStatus(name=name, description=grants.description, connected=False,
                                card=None, last_seen=None, suspended=grants.suspended)
                    for name, grants in sorted(policy.agents.items())]
        async with open_store(f"sqlite:///{mesh.db_path}") as store:
            statuses = await Registry(await store.kv("registry")).statuses(policy)
            kv = await store.kv("taint")
            for status in statuses:
                entry = await kv.get(status.name)
                if entry is not None and entry.value:
                    taints[status.name] = Label.parse(json.loads(entry.value))
            return statuses

    taints: dict[str, Label] = {}
    statuses = run(read())
    if as_json:
        out.print_json(json.dumps([{
            "name": s.name, "connected": s.connected, "description": s.description,
            "skills": [k.id for k in s.card.skills] if s.card else [],
            "calls": policy.agents[s.name].calls, "publish": policy.agents[s.name].publish,
            "subscribe": policy.agents[s.name].subscribe, "breaker": s.breaker,
            "suspended": s.suspended, "last_seen": s.last_seen,
            "taint_scope": policy.agents[s.name].taint_scope,
            "taint": taints[s.name].to_dict() if s.name in taints else None}
            for s in statuses]))
        return
    table = Table(title=f"agents of {mesh.root}")
    for column in ("agent", "state", "breaker", "skills", "may call", "taint", "description"):
        table.add_column(column)
    for s in statuses:
        skills = ", ".join(k.id for k in s.card.skills) if s.card else (
            "[dim](none)[/]" if s.last_seen else "[dim](never connected)[/]")
        state = ("[red]■ suspended[/]" if s.suspended else
                 "[green]● connected[/]" if s.connected else "[dim]○ offline[/]")
        if not s.connected and s.last_seen:  # a CLI, an edge or a past connection
            state += time.strftime(" [dim](seen %H:%M:%S)[/]", time.localtime(s.last_seen))
        breaker = {"closed": "[green]closed[/]", "open": "[red]open[/]",
                   "half-open": "[yellow]half-open[/]"}.get(s.breaker, s.breaker)
        scope = policy.agents[s.name].taint_scope
        taint = rich_escape(taints[s.name].describe()) if s.name in taints else "[dim]clean[/]"
        if scope == "conversation":
            taint += " [yellow](per conversation)[/]"
        table.add_row(s.name, state, breaker, skills, ", ".join(policy.agents[s.name].calls) or
                      "[dim]nothing[/]", taint, s.description)
    out.print(table)


# -- calls ----------------------------------------------------------------------------------

@app.command()
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
    from .sdk import connect
    payload = _json_argument(data)
    mesh = MeshHome(home)

    async def go() -> Any:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            return await m.call(target, skill, payload, timeout=timeout)

    started = time.perf_counter()
    result = run(go())
    out.print_json(json.dumps(result))
    took = 1000 * (time.perf_counter() - started)
    err.print(f"[dim]{target}.{skill} answered in {took:.1f} ms[/]")


@app.command()
@friendly
def token(agent: AgentName, home: HomeOption = None,
          days: Annotated[float, typer.Option(help="How long the token is valid.")] = 30.0
          ) -> None:
    """Issue a bearer token that lets an outside client (an A2A or ACP client) act as the
    enrolled AGENT at the hub's protocol edges; the gate applies AGENT's grants.

    Example: TOKEN=$(interlink token ideator)"""
    from .identity import issue_token
    mesh = MeshHome(home)
    if not mesh.load_policy().enrolled(agent):
        raise fail(f"{agent!r} is not enrolled", f"`interlink agent add {agent}` first", code=2)
    print(issue_token(mesh.hub_key(), agent, days=days))
    err.print(f"[dim]bearer token for {agent}, valid {days:g} days; send it as "
              "`Authorization: Bearer <token>`; it acts with exactly this agent's grants[/]")


@app.command()
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
    from .edges.mcp import serve_http, serve_stdio
    mesh = MeshHome(home)
    mesh.require()
    if http:
        err.print(f"MCP (streamable HTTP) as [bold]{agent}[/] on http://{host}:{port}/mcp")
        run(serve_http(mesh, agent, hub=hub, host=host, port=port))
    else:
        run(serve_stdio(mesh, agent, hub=hub))


@app.command()
@friendly
def approvals(home: HomeOption = None) -> None:
    """Calls held for approval (untrusted input to a `needs_approval` skill).

    Example: interlink approvals"""
    from .services.calls import CallRecord
    mesh = MeshHome(home)

    async def read() -> list[CallRecord]:
        async with _store(mesh) as store:
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


@app.command()
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
    from .sdk import connect
    mesh = MeshHome(home)

    async def go() -> None:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            await m.approve(call_id, approve=not refuse, reason=reason)

    run(go())
    out.print(f"[green]✓[/] call {call_id} {'refused' if refuse else 'approved'} by {as_agent}")


# -- events ---------------------------------------------------------------------------------

@app.command()
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
    from .sdk import connect
    payload = _json_argument(data)
    mesh = MeshHome(home)

    async def go() -> dict[str, Any]:
        async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
            return await m.publish(topic, payload, event_id=event_id)

    answer = run(go())
    again = " [yellow](a duplicate: the first publish of this id stands)[/]" \
        if answer.get("duplicate") else ""
    out.print(f"[green]✓[/] published [bold]{answer['topic']}[/] #{answer['topic_seq']} "
              f"(log seq {answer['seq']}){again}")


@app.command()
@friendly
def tail(pattern: Annotated[str, typer.Argument(help="Topic pattern: * one token, > the rest.")]
         = ">",
         home: HomeOption = None,
         from_seq: Annotated[int | None, typer.Option(
             "--from-seq", help="Start at this log sequence (1 = everything).")] = None,
         since: Annotated[float | None, typer.Option(
             help="Start this many seconds ago.")] = None,
         count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
         follow: Annotated[bool, typer.Option(help="Keep waiting for new events.")] = True
         ) -> None:
    """Show events as they land: sequence, time, topic and its number, sender, data.

    Example: interlink tail 'blog.>' --from-seq 1 --no-follow"""
    from .names import matches, pattern_error
    if problem := pattern_error(pattern):
        raise fail(problem, "e.g. `interlink tail 'blog.>'`", code=2)
    mesh = MeshHome(home)
    settings = mesh.load_policy().hub

    async def go() -> None:
        shown = 0
        async with _store(mesh) as store:
            log_ = await store.log("events", dedup_window=settings.event_dedup_seconds)
            last = await log_.last_seq()
            next_seq = (from_seq if from_seq is not None else
                        await log_.seq_at(time.time() - since) if since is not None else last + 1)
            err.print(f"[dim]events matching {pattern} from log seq {next_seq}"
                      + (" (Ctrl-C stops)" if follow else "") + "[/]")
            while count is None or shown < count:
                last = await log_.last_seq()
                batch = await log_.read(next_seq, subject=pattern, limit=256)
                for message in batch:
                    if matches(pattern, message.subject):
                        out.print(_event_line(message), highlight=False, soft_wrap=True)
                        shown += 1
                        if count is not None and shown >= count:
                            return
                next_seq = max(next_seq, last + 1) if len(batch) < 256 else batch[-1].seq + 1
                if not follow:
                    return
                await log_.wait_for(next_seq - 1, timeout=1.0)

    with _interruptible():
        run(go())


@app.command()
@friendly
def topics(home: HomeOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Topics with their event counts and schemas; durable consumers with their lag.

    Example: interlink topics"""
    mesh = MeshHome(home)
    settings = mesh.load_policy().hub

    async def read() -> tuple[dict[str, int], list[Any], dict[str, int]]:
        async with _store(mesh) as store:
            log_ = await store.log("events", dedup_window=settings.event_dedup_seconds)
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


def _json_argument(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise fail(f"the input is not JSON: {exc}", "quote it: '{\"topic\": \"x\"}'") from None


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        err.print("[dim]stopped[/]")


def _store(mesh: MeshHome) -> Any:
    if not mesh.db_path.exists():
        raise fail(f"no store at {mesh.db_path}: the hub has not run yet",
                   "start it with `interlink serve`")
    return open_store(f"sqlite:///{mesh.db_path}")


# -- memory ---------------------------------------------------------------------------------
# Reads go to the store file directly (an operator's view, hub up or down); writes go through
# the hub as an enrolled agent, so the gate, the grants and the audit apply.

AsAgent = Annotated[str | None, typer.Option(
    "--as", help="Read through the hub as this enrolled agent (its grants apply) instead of "
                 "from the store file.")]


async def _memory_entries(mesh: MeshHome, namespace: str, op: str, key: str) -> list[Any]:
    from .names import key_error, namespace_error, prefix_error
    from .services.memory import MEMORY_BUCKET, entry_dict
    if problem := namespace_error(namespace) or (
            prefix_error(key) if op == "list" else key_error(key)):
        raise fail(problem, code=2)
    async with _store(mesh) as store:
        kv = await store.kv(MEMORY_BUCKET, history=mesh.load_policy().hub.memory_history)
        full = f"{namespace}/{key}"
        if op == "list":
            entries = await kv.items(full)
        elif op == "history":
            entries = await kv.history(full)
        else:
            entry = await kv.get(full)
            entries = [entry] if entry else []
        return [entry_dict(namespace, e) for e in entries]


async def _memory_via_hub(mesh: MeshHome, as_agent: str, hub: str | None, namespace: str,
                          op: str, fields: dict[str, Any]) -> dict[str, Any]:
    from .sdk import connect
    async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
        return await m.connection.memory_request(namespace, op, fields)


def _show_entries(entries: list[dict[str, Any]], *, as_json: bool, title: str) -> None:
    if as_json:
        out.print_json(json.dumps(entries))
        return
    if not entries:
        out.print(f"[dim]{title}: nothing[/]")
        return
    table = Table(title=title)
    for column in ("key", "rev", "value", "by", "when", "labels"):
        table.add_column(column, justify="right" if column == "rev" else "left")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
        if e.get("expires"):
            when += f" (expires in {max(0.0, e['expires'] - time.time()):.0f}s)"
        value = ("[red](deleted)[/]" if e.get("change") == "del" else
                 rich_escape(json.dumps(e["value"], ensure_ascii=False)[:80]))
        table.add_row(e["key"], str(e["revision"]), value, e.get("by") or "", when,
                      json.dumps(e["labels"]) if e.get("labels") else "")
    out.print(table)


@memory_app.command("ls")
@friendly
def memory_ls(namespace: Namespace, prefix: Annotated[str, typer.Argument(
                  help="Only keys starting with this.")] = "",
              home: HomeOption = None, as_agent: AsAgent = None,
              hub: Annotated[str | None, typer.Option(help="Hub URL (with --as).")] = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
              ) -> None:
    """List the live keys of NAMESPACE starting with PREFIX.

    Example: interlink memory ls blog drafts/"""
    mesh = MeshHome(home)
    entries = (run(_memory_via_hub(mesh, as_agent, hub, namespace, "list",
                                   {"prefix": prefix}))["entries"]
               if as_agent else run(_memory_entries(mesh, namespace, "list", prefix)))
    _show_entries(entries, as_json=as_json, title=f"{namespace}/{prefix}*")


@memory_app.command("get")
@friendly
def memory_get(namespace: Namespace, key: MemoryKey, home: HomeOption = None,
               as_agent: AsAgent = None,
               hub: Annotated[str | None, typer.Option(help="Hub URL (with --as).")] = None
               ) -> None:
    """Print a key's value (JSON) and, on stderr, its revision and writer.

    Example: interlink memory get blog style-guide --as editor"""
    mesh = MeshHome(home)
    if as_agent:
        entry = run(_memory_via_hub(mesh, as_agent, hub, namespace, "get",
                                    {"key": key})).get("entry")
        entries = [entry] if entry else []
    else:
        entries = run(_memory_entries(mesh, namespace, "get", key))
    if not entries:
        raise fail(f"{namespace}/{key} is not set (absent, deleted or expired)",
                   f"`interlink memory ls {namespace}` lists what is there", code=4)
    e = entries[0]
    out.print_json(json.dumps(e["value"]))
    err.print(f"[dim]revision {e['revision']}, written by {e['by']} at "
              f"{time.strftime('%H:%M:%S', time.localtime(e['ts']))}[/]")


@memory_app.command("history")
@friendly
def memory_history(namespace: Namespace, key: MemoryKey, home: HomeOption = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                   ) -> None:
    """Every kept revision of a key, oldest first (deletes included).

    Example: interlink memory history blog style-guide"""
    entries = run(_memory_entries(MeshHome(home), namespace, "history", key))
    _show_entries(entries, as_json=as_json, title=f"history of {namespace}/{key}")


@memory_app.command("put")
@friendly
def memory_put(namespace: Namespace, key: MemoryKey,
               value: Annotated[str, typer.Argument(metavar="JSON", help="The value, as JSON.")],
               as_agent: Annotated[str, typer.Option(
                   "--as", help="Write as this enrolled agent (needs read-write).")],
               home: HomeOption = None,
               expect: Annotated[int | None, typer.Option(
                   help="Only if the key is at this revision (0: only if absent).")] = None,
               ttl: Annotated[float | None, typer.Option(help="Expire after seconds.")] = None,
               hub: Annotated[str | None, typer.Option(help="Hub URL (default from the "
                                                            "credential).")] = None) -> None:
    """Write a JSON value to NAMESPACE/KEY through the hub, as an enrolled agent.

    Example: interlink memory put blog style-guide '{"tone": "warm"}' --as editor --expect 1"""
    from .sdk import StaleRevision
    payload = _json_argument(value)
    fields: dict[str, Any] = {"key": key, "value": payload}
    if expect is not None:
        fields["expect"] = expect
    if ttl is not None:
        fields["ttl"] = ttl
    try:
        answer = run(_memory_via_hub(MeshHome(home), as_agent, hub, namespace,
                                     "update" if expect is not None else "put", fields))
    except StaleRevision as exc:
        raise fail(exc.reason, f"read it again: `interlink memory get {namespace} {key}`",
                   code=3) from None
    out.print(f"[green]✓[/] {namespace}/{key} is at revision {answer['revision']}")


# -- audit ----------------------------------------------------------------------------------

@audit_app.command("verify")
@friendly
def audit_verify(home: HomeOption = None) -> None:
    """Check the audit chain against its signed head: exits non-zero naming the first record
    changed, removed or reordered, a missing or rewritten checkpoint, or a chain cut short.

    Example: interlink audit verify"""
    from .services.audit import verify_chain
    mesh = MeshHome(home)
    key = mesh.hub_key()

    async def check() -> Any:
        async with _store(mesh) as store:
            return await verify_chain(await store.log("audit"), key.public,
                                      head_path=mesh.audit_head_path)

    report = run(check())
    for notice in report.notices:
        out.print(f"[yellow]![/] {rich_escape(notice)}", highlight=False)
    if not report.ok:
        raise fail(f"audit chain broken: {report.problems[0]}",
                   f"{report.records} records verified before it", code=1)
    head = ("it reaches the signed head in " + str(mesh.audit_head_path) if report.head_checked
            else f"[yellow]no signed head at {mesh.audit_head_path} to check it against[/]")
    out.print(f"[green]✓[/] audit chain intact: {report.records} records, "
              f"{report.checkpoints} signed checkpoints (sealed up to record "
              f"{report.sealed_upto}; {report.unsealed} after the last checkpoint); {head}",
              highlight=False)


@audit_app.command("head")
@friendly
def audit_head(home: HomeOption = None) -> None:
    """Print the latest signed audit checkpoint (keep a copy elsewhere: a chain rolled back
    together with its head file is caught by comparing with it).

    Example: interlink audit head > audit-head-$(date +%F).json"""
    from .services.audit import read_head
    head = read_head(MeshHome(home).audit_head_path)
    if head is None:
        raise fail("no signed audit head yet", "the hub writes one at its first checkpoint")
    out.print_json(json.dumps(head))


@audit_app.command("show")
@friendly
def audit_show(home: HomeOption = None,
               last: Annotated[int, typer.Option(help="How many records.")] = 20) -> None:
    """Print the latest audit records.

    Example: interlink audit show --last 20"""
    from .services.audit import RECORD, describe_record
    mesh = MeshHome(home)

    async def read() -> list[dict[str, Any]]:
        async with _store(mesh) as store:
            log_ = await store.log("audit")
            start = max(1, await log_.last_seq() - 2 * last)
            items = await log_.read(start, subject=RECORD, limit=10 * last)
            return [json.loads(m.data) for m in items][-last:]

    for rec in run(read()):
        out.print(describe_record(rec), highlight=False, markup=False, soft_wrap=True)


# -- demo -----------------------------------------------------------------------------------

@app.command()
@friendly
def demo(home: Annotated[Path, typer.Option(help="Where the demo's mesh home goes.")] =
         Path("interlink-demo")) -> None:
    """The whole story on the embedded store: five agents; calls, events, shared memory,
    labels that follow the data, and refusals with their rules.

    Example: interlink demo --home ./interlink-demo"""
    from .demo import run_demo
    code = run(run_demo(home, out))
    raise typer.Exit(code)


@app.command()
@friendly
def example(name: Annotated[str | None, typer.Argument(
                help="The example to run (omit it to list them).")] = None,
            home: HomeOption = None,
            source: Annotated[bool, typer.Option(
                "--source", help="Print the example's code instead of running it.")] = False,
            ) -> None:
    """Run an example's agents against the home's hub (they wait for it if it is not up), or
    print its code to copy and change.

    Example: interlink example blog-team &     (then: interlink call ideator drafter draft ...)"""
    import importlib.util
    import runpy

    from .examples import EXAMPLES
    if name is None:
        for known in EXAMPLES:
            out.print(known)
        return
    if name not in EXAMPLES:
        raise fail(f"no example called {name!r}", "these exist: " + ", ".join(EXAMPLES), code=2)
    module = f"interlink.examples.{EXAMPLES[name]}"
    if source:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        print(Path(spec.origin).read_text(), end="")
        return
    mesh = MeshHome(home)
    mesh.require()
    os.environ["INTERLINK_HOME"] = str(mesh.root)  # where its agents find their credentials
    runpy.run_module(module, run_name="__main__", alter_sys=True)


SECTIONS = ("calls", "gate", "events", "memory", "scale")


@app.command()
@friendly
def bench(sections: Annotated[str, typer.Option(
              help="Comma-separated: calls, gate, events, memory, scale.")] = ",".join(SECTIONS),
          quick: Annotated[bool, typer.Option(
              help="Fewer calls and sizes (about a minute): a smoke run, not figures.")] = False,
          json_file: Annotated[Path | None, typer.Option(
              "--json", help="Also write every figure as JSON to this file.")] = None,
          plot_file: Annotated[Path | None, typer.Option(
              "--plot", help="Also draw the ratios to this PNG (needs matplotlib).")] = None,
          ) -> None:
    """Measure what the mesh costs, each figure beside its baseline in the same run: calls vs
    a direct a2a-sdk call (every server in its own process), the gate's security stages,
    events vs polling, memory vs the bare store, and 10/100/1,000 agents on one hub. Takes
    a few minutes; run it on a quiet machine and compare ratios, not absolute figures.

    Example: interlink bench --sections calls,gate --json bench.json --plot bench.png"""
    import importlib
    import tempfile

    from .bench.report import plot, show, to_json
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown section(s) {unknown}; use {', '.join(SECTIONS)}",
                                 param_hint="--sections")

    def progress(text: str) -> None:
        err.print(f"[dim]… {rich_escape(text)}[/]", highlight=False)

    async def measure(work: Path) -> list[Any]:
        figures = []
        for section in chosen:
            module = importlib.import_module(f"interlink.bench.{section}")
            figures += await module.run(work, quick=quick, progress=progress)
        return figures

    with tempfile.TemporaryDirectory(prefix="interlink-bench-") as work:
        figures = run(measure(Path(work)))
    show(figures, out)
    if json_file:
        to_json(figures, json_file, chosen, quick)
        out.print(f"figures written to {json_file}")
    if plot_file:
        plot(figures, plot_file)
        out.print(f"ratios drawn to {plot_file}")


@app.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference: every mesh.yaml key, its default and what it does
    (the same as docs/configuration.md, made from the code).

    Example: interlink config-reference > docs/configuration.md"""
    from .reference import configuration_reference
    print(configuration_reference())


def _version(value: bool) -> None:
    if value:
        from . import __version__
        out.print(f"interlink {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Interlink: the communication layer between AI agents."""


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
