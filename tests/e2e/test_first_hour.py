"""Regressions from trying Interlink as a new user would: edge credentials that expire, a demo
that deletes folders, an agent started before its hub, an agent the hub will not take back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, SkillContext
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import background_hub

from ..helpers import HubProcess, env_python, free_port, interlink_cli, make_home, wait_until


async def test_the_a2a_edge_renews_its_credential_before_it_expires(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge credentials are short-lived; the edge hands over to a fresh one instead of being
    refused `expired_credential` from then on (it used to stop working after an hour)."""
    monkeypatch.setattr("interlink.edges.local.EDGE_CREDENTIAL_DAYS", 2 / 86400)  # 2 s
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    async with background_hub(home) as hub:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=hub.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        token = issue_token(hub.hub.key, "alice")
        async with worker, httpx.AsyncClient(headers={
                "Authorization": f"Bearer {token}", "A2A-Version": "1.0"}, timeout=15) as http:
            for attempt in range(3):
                answer = await http.post(f"http://127.0.0.1:{hub.port}/a2a/worker", json={
                    "jsonrpc": "2.0", "id": attempt, "method": "SendMessage", "params": {
                        "message": {"messageId": f"m{attempt}", "role": "ROLE_USER",
                                    "parts": [{"data": {"n": attempt}}]},
                        "metadata": {"skill": "echo"}}})
                body = answer.json()
                assert "result" in body, (attempt, body)
                await asyncio.sleep(2.5)  # past the edge credential's lifetime


async def test_an_edge_request_refused_expired_credential_in_a_race_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge takes its connection, then the credential runs out before the hub reads the
    call (a stalled loop): the call was refused at authenticate, nothing was committed, so the
    edge makes it once more on a fresh connection. Forced here by an edge that never notices
    expiry on its own, over A2A and ACP."""
    monkeypatch.setattr("interlink.edges.local.EDGE_CREDENTIAL_DAYS", 1 / 86400)  # 1 s
    monkeypatch.setattr("interlink.edges.a2a._expiring", lambda connection: False)
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    async with background_hub(home) as hub:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=hub.url)
        ran: list[Any] = []

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            ran.append(req)
            return req

        token = issue_token(hub.hub.key, "alice")
        base = f"http://127.0.0.1:{hub.port}"
        async with worker, httpx.AsyncClient(headers={
                "Authorization": f"Bearer {token}", "A2A-Version": "1.0"}, timeout=15) as http:
            for attempt in range(2):
                answer = await http.post(f"{base}/a2a/worker", json={
                    "jsonrpc": "2.0", "id": attempt, "method": "SendMessage", "params": {
                        "message": {"messageId": f"m{attempt}", "role": "ROLE_USER",
                                    "parts": [{"data": {"n": attempt}}]},
                        "metadata": {"skill": "echo"}}})
                assert "result" in answer.json(), (attempt, answer.json())
                run = await http.post(f"{base}/acp/runs", json={
                    "agent_name": "worker", "mode": "sync", "input": [
                        {"role": "user", "parts": [{"content_type": "application/json",
                                                    "content": f'{{"acp": {attempt}}}'}]}]})
                assert run.status_code == 200 and run.json()["status"] == "completed", run.text
                await asyncio.sleep(1.5)  # past the edge credential's lifetime
        assert len(ran) == 4  # each request ran its skill exactly once


def test_the_demo_does_not_delete_a_folder_it_did_not_make(tmp_path: Path) -> None:
    for name, setup in (("notes", lambda d: (d / "notes.txt").write_text("mine")),
                        ("home", lambda d: MeshHome(d).init())):
        target = tmp_path / name
        target.mkdir()
        setup(target)
        before = sorted(p.name for p in target.iterdir())
        done = subprocess.run([sys.executable, "-m", "interlink", "demo", "--home",
                               str(target)], capture_output=True, text=True, timeout=60,
                              env=env_python())
        assert done.returncode != 0
        assert "was not made by `interlink demo`" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert sorted(p.name for p in target.iterdir()) == before


def test_the_demo_replaces_its_own_folder(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "interlink", "demo", "--home",
                               str(target)], capture_output=True, text=True, timeout=120,
                              env=env_python())
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert (target / ".interlink-demo").exists()


AGENT = """
import sys
from interlink import Agent
agent = Agent("worker", credential=sys.argv[1], hub=sys.argv[2])

@agent.skill("echo")
async def echo(ctx, req):
    return req

agent.run()
"""


async def test_an_agent_waits_for_its_hub_and_stops_when_refused(tmp_path: Path) -> None:
    """Started before its hub, the agent waits (saying so) instead of crashing; once the hub
    refuses to take it back (suspended), it ends with one line and exit status 1."""
    home = make_home(tmp_path / "home", {"caller": ["worker.*"], "worker": []})
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(home.credential_path("worker")),
                              url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env_python())
    hub = HubProcess(home, port)
    try:
        assert agent.stderr is not None
        said = await asyncio.wait_for(asyncio.to_thread(agent.stderr.readline), 30)
        assert "waiting for the hub" in said and "connection refused" in said, said
        assert agent.poll() is None, agent.communicate()  # waiting, not crashed
        await hub.start()
        from interlink import connect
        async with connect("caller", credential=home.credential_path("caller"),
                           hub=url) as caller:
            result = None
            for _ in range(50):  # the agent notices the hub within its backoff
                try:
                    result = await caller.call("worker", "echo", {"ok": 1}, timeout=5)
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            assert result == {"ok": 1}
        done = interlink_cli(home)("agent", "suspend", "worker")
        assert done.returncode == 0
        started = time.monotonic()
        while agent.poll() is None and time.monotonic() - started < 15:
            await asyncio.sleep(0.1)
        out, err = agent.communicate(timeout=5)
        assert agent.returncode == 1, (out, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith("worker: stopped:") and "suspended" in last, err
        assert "Traceback" not in err
    finally:
        if agent.poll() is None:
            agent.kill()
        hub.stop()



async def test_agents_follow_the_hub_to_another_port(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL written into credentials at enrolment is not where agents must look: the home's
    mesh.yaml says where the hub listens now, and a list of URLs is tried in turn."""
    from interlink import connect
    monkeypatch.delenv("INTERLINK_HUB", raising=False)
    home = make_home(tmp_path / "home", {"caller": ["worker.*"], "worker": []})
    port = free_port()
    policy = home.load_policy()
    policy.hub.port = port  # moved after the agents were enrolled
    home.save_policy(policy)
    async with background_hub(home, port=port) as hub:
        worker = Agent("worker", credential=home.credential_path("worker"))

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        async with worker, connect("caller", credential=home.credential_path("caller")) as c:
            assert c.connection.url == hub.url
            assert await c.call("worker", "echo", 5) == 5
        dead = f"ws://127.0.0.1:{free_port()}/ws"
        async with connect("caller", credential=home.credential_path("caller"),
                           hub=[dead, hub.url]) as c:
            assert c.connection.url == hub.url


def test_the_cli_edits_mesh_yaml_in_place(tmp_path: Path) -> None:
    """Comments, order and the user's layout survive `agent add`, `grant`, `suspend` and
    `restore`; only what was asked for is written (no wall of defaults); an edit that would
    break the policy is refused and leaves the file as it was."""
    home = MeshHome(tmp_path / "home")
    home.init()
    text = home.policy_path.read_text().replace(
        "agents: {}", "# the team\nagents:\n  drafter:   # writes the drafts\n"
                      "    calls: [editor.review]  # only reviews\n")
    home.policy_path.write_text(text)
    cli = interlink_cli(home)
    for args in (("agent", "add", "drafter", "--renew"), ("agent", "add", "editor"),
                 ("agent", "grant", "drafter", "--publish", "blog.*"),
                 ("agent", "suspend", "editor"), ("agent", "restore", "editor")):
        done = cli(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    after = home.policy_path.read_text()
    for kept in ("# the team", "# writes the drafts", "# only reviews", "editor.review"):
        assert kept in after, after
    assert "blog.*" in after and "editor: {}" in after
    for default in ("clearance", "sensitive", "needs_approval", "suspended", "max_hops"):
        assert default not in after, (default, after)
    bad = cli("agent", "grant", "drafter", "--call", "nodot")
    assert bad.returncode != 0
    assert home.policy_path.read_text() == after


def test_small_things_a_new_user_meets(tmp_path: Path) -> None:
    """`--version`; the reserved name `hub`; errors print bracketed text as it is."""
    home = MeshHome(tmp_path / "home")
    home.init()
    cli = interlink_cli(home)
    version = subprocess.run([sys.executable, "-m", "interlink", "--version"],
                             capture_output=True, text=True, timeout=60, env=env_python())
    assert version.returncode == 0 and version.stdout.startswith("interlink ")
    reserved = cli("agent", "add", "hub")
    assert reserved.returncode != 0 and "reserved" in reserved.stderr
    home.add_agent("alice")
    bad = cli("agent", "grant", "alice", "--call", "nodot")
    assert bad.returncode != 0
    assert "agent.skill" in bad.stderr  # an argument error, said before mesh.yaml is touched
    missing = cli("agent", "add", "remote", "--a2a", "http://127.0.0.1:9/", "--card-key",
                  str(tmp_path / "no-such.pem"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "remote" not in home.load_policy().agents


async def test_the_hub_log_says_who_connected_and_what_was_refused(tmp_path: Path) -> None:
    """`serve --log-format json`: one JSON line per connection, refusal (with stage, code and
    rule) and disconnection; an expected refusal at the A2A edge logs no traceback."""
    import json as jsonlib

    from interlink import GateDenied, connect
    home = make_home(tmp_path / "home", {"alice": [], "bob": []})
    port = free_port()
    log = tmp_path / "hub.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "interlink", "serve", "--home",
                                 str(home.root), "--port", str(port), "--log-format", "json"],
                                stdout=out, stderr=subprocess.STDOUT, env=env_python())
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        for _ in range(100):
            try:
                async with connect("alice", credential=home.credential_path("alice"),
                                   hub=url) as alice:
                    with pytest.raises(GateDenied):
                        await alice.call("bob", "anything", {})
                break
            except Exception as exc:
                if isinstance(exc, AssertionError):
                    raise
                await asyncio.sleep(0.2)
        token = issue_token(home.hub_key(), "alice")
        async with httpx.AsyncClient(timeout=15) as http:
            answer = await http.post(f"http://127.0.0.1:{port}/a2a/bob", json={
                "jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                    "message": {"messageId": "m1", "role": "ROLE_USER",
                                "parts": [{"data": {}}]}}},
                headers={"Authorization": f"Bearer {token}", "A2A-Version": "1.0"})
            assert "error" in answer.json()
        await wait_until(lambda: "disconnected alice" in log.read_text())  # logged, then stop
    finally:
        proc.terminate()
        proc.wait(15)
    lines = [jsonlib.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("connected alice") for m in messages), messages
    assert any(m.startswith("disconnected alice") for m in messages), messages
    refused = [line for line in lines if line["message"].startswith("refused call")]
    assert refused and refused[0]["code"] == "not_granted" and refused[0]["stage"] == \
        "authorize" and "agents.alice.calls" in refused[0]["rule"]
    assert "Traceback" not in log.read_text()


async def test_agents_counts_client_connections_as_seen(tmp_path: Path) -> None:
    """An agent that only ever connects as a client (the CLI, an edge, a script) is shown as
    seen, not as "never connected"."""
    import json as jsonlib

    from interlink import connect
    home = make_home(tmp_path / "home", {"alice": []})
    async with background_hub(home) as hub:
        async with connect("alice", credential=home.credential_path("alice"), hub=hub.url):
            pass
    listed = jsonlib.loads(interlink_cli(home)("agents", "--json").stdout)
    alice = next(a for a in listed if a["name"] == "alice")
    assert alice["connected"] is False and alice["last_seen"] is not None
    table = interlink_cli(home)("agents").stdout
    assert "seen" in next(line for line in table.splitlines() if "alice" in line)


async def test_a_policy_edit_returns_once_the_running_hub_applied_it(tmp_path: Path) -> None:
    """A script's next command meets the new policy: the CLI waits for this home's hub to
    report the edited mesh.yaml's digest. With no hub running it does not wait at all."""
    import hashlib
    port = free_port()
    home = make_home(tmp_path / "home", {"alice": [], "worker": []}, port)
    cli = interlink_cli(home)
    async with background_hub(home, port=port) as hub:
        for args in (("agent", "grant", "alice", "--call", "worker.echo"),
                     ("agent", "set", "alice", "--rate", "40"),
                     ("agent", "revoke", "alice", "--call", "worker.echo"),
                     ("agent", "add", "bob"), ("agent", "suspend", "bob")):
            done = await asyncio.to_thread(cli, *args)
            assert done.returncode == 0, done.stderr
            digest = hashlib.sha256(home.policy_path.read_bytes()).hexdigest()
            assert hub.hub.policy.digest == digest, args
    started = time.monotonic()
    done = await asyncio.to_thread(cli, "agent", "restore", "bob")  # no hub: no waiting
    assert done.returncode == 0 and "has not applied" not in done.stderr
    assert time.monotonic() - started < 3.0
