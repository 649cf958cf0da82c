"""Agents: enrol, grant, take back, set, suspend, restore, remove, clear taint, list; revoke
credentials, tokens and delegations."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from ..home import MeshHome
from ..labels import Label
from ..store import open_store
from .base import (
    AgentName,
    HomeOption,
    agent_app,
    app,
    fail,
    friendly,
    out,
    policy_edit,
    run,
)

PANEL = "Agents and rights"


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


@app.command(rich_help_panel=PANEL)
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
    from ..identity import CredentialFile, token_id
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
    from ..delegation import revocation_ids
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

    from ..identity import ADMIN_AUDIENCE, issue_token
    mesh = MeshHome(home)
    policy = mesh.load_policy()
    base = hub or mesh.hub_http_url(policy)
    token = issue_token(mesh.hub_key(), "operator", days=60 / 86400, audience=ADMIN_AUDIENCE)
    try:
        response = httpx.post(f"{base.rstrip('/')}/admin/agents/{name}/clear-taint",
                              json={"by": by, "reason": reason},
                              headers={"authorization": f"Bearer {token}"}, timeout=10,
                              verify=mesh.hub_verify(policy))
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


@app.command(rich_help_panel=PANEL)
@friendly
def agents(home: HomeOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List enrolled agents: connected or not, and their skills.

    Example: interlink agents --json"""
    from ..services.registry import AgentStatus, Registry
    mesh = MeshHome(home)
    policy = mesh.load_policy()

    async def read() -> list[Any]:
        if not mesh.store_exists():  # the hub never ran: enrolled, never connected
            return [AgentStatus(name=name, description=grants.description, connected=False,
                                card=None, last_seen=None, suspended=grants.suspended)
                    for name, grants in sorted(policy.agents.items())]
        async with open_store(mesh.store_url()) as store:
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
