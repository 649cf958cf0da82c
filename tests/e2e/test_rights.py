"""Taking rights back, from the CLI as an operator would, against a running hub: grants, whole
agents, credentials (renewal revokes the old one), bearer tokens and delegations — each refused
from then on, each change in the audit chain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, GateDenied, SkillContext, connect
from interlink.home import MeshHome
from interlink.identity import CredentialFile, issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import audit_records, free_port, interlink_cli, make_home, wait_until


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, RunningHub]]:
    port = free_port()  # in mesh.yaml too: the CLI finds the hub and waits for it to apply
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "bob": [], "worker": []}, port)
    async with background_hub(home, port=port) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        async with worker:
            yield home, running


def client(home: MeshHome, hub: RunningHub, name: str) -> Any:
    return connect(name, credential=home.credential_path(name), hub=hub.url)


async def cli(home: MeshHome, *args: str) -> str:
    done = await asyncio.to_thread(interlink_cli(home), *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout  # the CLI returned: the hub has applied the change


async def test_a_grant_taken_back_is_refused(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    async with client(home, hub, "alice") as alice:
        assert await alice.call("worker", "echo", 1) == 1
        await cli(home, "agent", "revoke", "alice", "--call", "worker.*")
        with pytest.raises(GateDenied) as refused:
            await alice.call("worker", "echo", 2)
        assert refused.value.code == "not_granted"
    records = [r for r in await audit_records(home) if r["event"] == "policy"]
    assert records[-1]["changes"]["agents"]["alice"]["calls"] == {"from": ["worker.*"],
                                                                 "to": []}
    missing = interlink_cli(home)("agent", "revoke", "alice", "--call", "nothing.here")
    assert missing.returncode != 0 and "did not have" in missing.stderr


async def test_agent_set_changes_what_the_readme_says_to_hand_edit(
        mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    await cli(home, "agent", "set", "worker", "--clearance", "confidential+phi",
              "--sensitive", "echo", "--rate", "200", "--taint-scope", "conversation")
    grants = home.load_policy().agents["worker"]
    assert grants.clearance.level == "confidential" and grants.clearance.tags == ["phi"]
    assert grants.sensitive == ["echo"] and grants.rate == 200
    assert grants.taint_scope == "conversation"
    await cli(home, "agent", "set", "bob", "--untrusted-from", "web")
    async with client(home, hub, "alice") as alice, client(home, hub, "bob") as bob:
        assert await alice.call("worker", "echo", 1) == 1  # trusted input to a sensitive skill
        assert home.load_policy().agents["bob"].label == {"integrity": "untrusted",
                                                         "provenance": ["web"]}
        del bob


async def test_a_removed_agent_is_cut_off(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    cred = CredentialFile.load(home.credential_path("bob"))
    async with client(home, hub, "bob") as bob:
        out = await cli(home, "agent", "remove", "bob")
        assert cred.credential.id in out
        await wait_until(lambda: bob.connection.refusal is not None, timeout=5)
        assert bob.connection.refusal.code in ("revoked_credential", "not_enrolled")
    assert not home.credential_path("bob").exists()
    assert "bob" not in home.load_policy().agents


async def test_renewal_revokes_the_old_credential(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    old = CredentialFile.load(home.credential_path("alice"))
    old_copy = home.root / "alice-old.cred"
    old.save(old_copy)
    await cli(home, "agent", "add", "alice", "--renew")
    with pytest.raises(GateDenied) as refused:
        async with connect("alice", credential=old_copy, hub=hub.url):
            pass
    assert refused.value.code == "revoked_credential"
    assert "--renew" in refused.value.reason
    async with client(home, hub, "alice") as alice:  # the new credential works
        assert await alice.call("worker", "echo", 3) == 3


async def test_a_revoked_credential_closes_its_connections(
        mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    async with client(home, hub, "alice") as alice:
        await cli(home, "revoke", str(home.credential_path("alice")))
        await wait_until(lambda: alice.connection.refusal is not None, timeout=5)
        assert alice.connection.refusal.code == "revoked_credential"


async def test_a_revoked_bearer_token_is_refused_at_the_edges(
        mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    token, other = issue_token(hub.hub.key, "alice"), issue_token(hub.hub.key, "alice")
    url = f"http://127.0.0.1:{hub.port}/a2a/worker"
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"data": 1}]},
        "metadata": {"skill": "echo"}}}
    await cli(home, "revoke", token)
    async with httpx.AsyncClient(timeout=15) as http:
        refused = await http.post(url, json=body, headers={
            "Authorization": f"Bearer {token}", "A2A-Version": "1.0"})
        assert refused.status_code == 401 and "revoked" in refused.text
        fine = await http.post(url, json=body, headers={
            "Authorization": f"Bearer {other}", "A2A-Version": "1.0"})
        assert fine.status_code == 200 and "result" in fine.json()


async def test_a_revoked_delegation_is_refused(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    async with client(home, hub, "alice") as alice, client(home, hub, "bob") as bob:
        token = await alice.delegate("bob", ["worker.echo"])
        assert await bob.call("worker", "echo", 4, delegation=token) == 4
        await cli(home, "revoke", token)
        with pytest.raises(GateDenied) as refused:
            await bob.call("worker", "echo", 5, delegation=token)
        assert refused.value.code == "delegation_refused" and "revoked" in refused.value.reason
