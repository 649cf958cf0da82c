"""A hub on NATS JetStream (`hub.store: nats://…`): the same mesh as on the embedded store —
calls, durable events, memory compare-and-swap, the CLI's reads, a hub killed and started again
— on a nats-server the tests start, plus the errors a wrong or missing server gives."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, CallError, GateDenied, SkillContext, connect
from interlink.errors import StoreError
from interlink.home import MeshHome
from interlink.identity import CredentialFile
from interlink.server import GRACEFUL_STOP_SECONDS, background_hub
from interlink.store import open_store
from interlink.tls import make_ca, make_hub_cert

from ..helpers import (
    HubProcess,
    NatsServer,
    RawClient,
    call_env,
    env_python,
    free_port,
    interlink_cli,
    make_home,
    wait_until,
)


def nats_home(root: Path, server: str) -> MeshHome:
    home = make_home(root, {"alice": ["worker.*"], "worker": []})
    home.grant("alice", publish=["news.*"], memory={"notes": "read-write"})
    home.grant("worker", subscribe=["news.*"])
    policy = home.load_policy()
    joint = "&" if "?" in server else "?"
    policy.hub.store = f"{server}{joint}prefix=E{uuid.uuid4().hex[:10]}"  # streams of its own
    home.save_policy(policy)
    return home


def start_standby(home: MeshHome, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`interlink serve --standby` on `port`, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "interlink", "serve", "--home", str(home.root), "--port",
             str(port), "--standby"], stdout=out, stderr=subprocess.STDOUT, env=env_python())


def stop_standby(standby: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, as an operator would; a hub waits at most `GRACEFUL_STOP_SECONDS` for open
    connections, then seals its audit chain (which may wait for the store): past that, it is
    killed and the test fails with the end of its log."""
    standby.terminate()
    try:
        standby.wait(GRACEFUL_STOP_SECONDS + 35)
    except subprocess.TimeoutExpired:
        standby.kill()
        standby.wait()
        raise AssertionError("the standby hub did not stop on SIGTERM; its log ends:\n"
                             + log.read_text(errors="replace")[-3000:]) from None


def worker_agent(home: MeshHome, url: str | list[str], got: list[Any]) -> Agent:
    worker = Agent("worker", credential=home.credential_path("worker"), hub=url)

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return req

    @worker.on_event("news.*", durable="news")
    async def news(ctx: Any, event: Any) -> None:
        got.append(event.data)

    return worker


async def test_a_hub_on_jetstream_serves_calls_events_and_memory(tmp_path: Path,
                                                                 nats_server: str) -> None:
    home = nats_home(tmp_path / "home", nats_server)
    got: list[Any] = []
    async with background_hub(home) as running:
        assert running.hub.store_url.startswith("nats://")
        worker = worker_agent(home, running.url, got)
        async with worker, connect("alice", credential=home.credential_path("alice"),
                                   hub=running.url) as alice:
            assert [await alice.call("worker", "echo", i) for i in range(5)] == list(range(5))
            assert sorted(await asyncio.gather(*(alice.call("worker", "echo", i)
                                                 for i in range(20)))) == list(range(20))
            for i in range(10):
                await alice.publish("news.today", {"n": i})
            notes = alice.memory("notes")
            rev = await notes.put("plan", {"v": 1})
            await notes.update("plan", {"v": 2}, expect=rev)
            with pytest.raises(Exception, match="revision"):
                await notes.update("plan", {"v": 3}, expect=rev)  # stale: refused
            entry = await notes.get("plan")
            assert entry is not None and entry.value == {"v": 2}
            await wait_until(lambda: len(got) == 10)
            assert [e["n"] for e in got] == list(range(10))  # in order, each once


async def test_the_cli_reads_a_jetstream_store_and_a_killed_hub_loses_nothing(
        tmp_path: Path, nats_server: str) -> None:
    """`interlink agents`, `audit verify` and `topics` read the store named in mesh.yaml; a
    call accepted while its target is offline survives the hub's SIGKILL."""
    home = nats_home(tmp_path / "home", nats_server)
    hub = HubProcess(home)
    await hub.start()
    cli = interlink_cli(home)
    try:
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=hub.url) as alice:
            pending = asyncio.ensure_future(alice.call("worker", "echo", "kept", timeout=60))
            await alice.publish("news.today", {"n": 1})

            async def accepted() -> bool:  # committed: in the store's call log
                async with open_store(home.store_url()) as store:
                    return await (await store.log("calls")).last_seq() >= 1
            await wait_until(accepted, timeout=20, interval=0.1)
            hub.kill()
            await hub.start()
            got: list[Any] = []
            async with worker_agent(home, hub.url, got):
                assert await asyncio.wait_for(pending, 30) == "kept"
                await wait_until(lambda: got == [{"n": 1}], timeout=20)
                agents = await asyncio.to_thread(cli, "agents", "--json")
                assert agents.returncode == 0, agents.stderr
                assert '"worker"' in agents.stdout and "true" in agents.stdout.lower()
        topics = await asyncio.to_thread(cli, "topics", "--json")
        assert topics.returncode == 0 and "news.today" in topics.stdout, topics.stderr
    finally:
        hub.stop()
    verified = await asyncio.to_thread(cli, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "unclean" in verified.stdout  # the kill is on record


@pytest.mark.parametrize("url, says", [
    ("nats://127.0.0.1:{closed}", "cannot reach NATS"),
    ("nats://127.0.0.1:4222/streams", "bad NATS store URL"),
    ("nats://127.0.0.1:4222?replica=3", "unknown option"),
])
def test_a_bad_or_unreachable_nats_server_is_refused_in_words(tmp_path: Path, url: str,
                                                               says: str) -> None:
    home = make_home(tmp_path / "home", {"alice": []})
    done = subprocess.run(
        [sys.executable, "-m", "interlink", "serve", "--home", str(home.root), "--port",
         str(free_port()), "--store", url.format(closed=free_port())],
        capture_output=True, text=True, timeout=60, env=env_python())
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert says in text, text
    assert "Traceback" not in text, text


async def test_a_call_to_an_agent_on_jetstream_fails_cleanly_when_refused(
        tmp_path: Path, nats_server: str) -> None:
    home = nats_home(tmp_path / "home", nats_server)
    async with background_hub(home) as running, \
            connect("alice", credential=home.credential_path("alice"),
                    hub=running.url) as alice:
        with pytest.raises(CallError):
            await alice.call("worker", "echo", 1, timeout=0.5)  # offline: times out


async def test_a_standby_hub_takes_over_and_agents_fail_over_to_it(tmp_path: Path,
                                                                   nats_server: str) -> None:
    """Active and standby on one JetStream store: the standby waits while another hub serves
    the store; when the active hub is SIGKILLed the standby takes over, agents listing both
    URLs move to it, a call accepted before the kill is answered, and events keep flowing,
    each once."""
    home = nats_home(tmp_path / "home", nats_server)
    active = HubProcess(home)
    await active.start()
    standby_port = free_port()
    said = tmp_path / "standby.log"
    standby = start_standby(home, standby_port, said)
    urls = [active.url, f"ws://127.0.0.1:{standby_port}/ws"]
    got: list[Any] = []
    try:
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=urls) as alice:
            await alice.publish("news.today", {"n": 1})
            # accepted by the active hub while the worker is offline
            pending = asyncio.ensure_future(alice.call("worker", "echo", "kept", timeout=60))

            async def accepted() -> bool:
                async with open_store(home.store_url()) as store:
                    return await (await store.log("calls")).last_seq() >= 1
            await wait_until(accepted, timeout=20, interval=0.1)
            active.kill()
            worker = worker_agent(home, urls, got)
            await worker.start(wait=True)  # until the standby has taken over and listens
            try:
                assert await asyncio.wait_for(pending, 40) == "kept"
                await alice.publish("news.today", {"n": 2})
                await wait_until(lambda: got == [{"n": 1}, {"n": 2}], timeout=20)
            finally:
                await worker.stop()
    finally:
        if active.proc is not None and active.proc.poll() is None:
            active.kill()
        stop_standby(standby, said)


async def test_the_store_reaches_nats_over_tls_and_refuses_a_server_it_cannot_trust(
        tmp_path: Path) -> None:
    ca, ca_key = make_ca(tmp_path / "ca")
    cert, key = make_hub_cert(tmp_path / "ca", ca, ca_key, ["127.0.0.1", "localhost"])
    server = NatsServer(tmp_path / "nats", tls=(cert, key)).start()
    try:
        async with open_store(f"{server.url}?tls_ca={ca}") as store:
            log = await store.log("secret")
            assert (await log.append("a.b", b"over tls")).seq == 1
            assert [m.data for m in await log.read()] == [b"over tls"]
        other, _ = make_ca(tmp_path / "other")
        with pytest.raises(StoreError, match="certificate"):
            async with open_store(f"{server.url}?tls_ca={other}"):
                pass
        plain = server.url.replace("tls://", "nats://")
        with pytest.raises(StoreError):  # the server wants TLS: a plaintext client fails
            async with open_store(plain):
                pass
    finally:
        server.stop()


async def test_an_envelope_accepted_before_a_failover_is_refused_by_the_standby(
        tmp_path: Path, nats_server: str) -> None:
    """The standby cannot know the nonces the active hub saw: it refuses everything signed
    before it took over, so an envelope captured from the active hub cannot be replayed."""
    home = nats_home(tmp_path / "home", nats_server)
    active = HubProcess(home)
    await active.start()
    standby_port = free_port()
    said = tmp_path / "standby.log"
    standby = start_standby(home, standby_port, said)
    alice = CredentialFile.load(home.credential_path("alice"))
    try:
        # signed while the standby already runs and waits: only its replay floor stops it
        await wait_until(lambda: "standing by" in said.read_text(), timeout=30)
        captured = call_env(alice, "worker.echo", "once")
        async with RawClient.open(active.url) as raw:
            assert (await raw.hello(alice))["op"] == "accepted"
            await raw.send(captured)
            assert (await raw.answer_to(captured["id"]))["op"] == "accepted"
        active.kill()
        standby_url = f"ws://127.0.0.1:{standby_port}/ws"

        async def listening() -> bool:
            try:
                async with RawClient.open(standby_url):
                    return True
            except OSError:
                return False
        await wait_until(listening, timeout=30, interval=0.2)
        async with RawClient.open(standby_url) as raw:
            assert (await raw.hello(alice))["op"] == "accepted"
            await raw.send(captured)  # the same bytes, replayed
            answer = await raw.answer_to(captured["id"])
            assert answer["op"] == "refused", answer
            assert answer["error"]["stage"] == "authenticate"
    finally:
        stop_standby(standby, said)


async def test_the_store_going_away_mid_run_is_said_and_nothing_is_lost(tmp_path: Path) -> None:
    """The NATS server dies under a running hub: `/healthz` says so (503), a call is refused
    at once saying the store is unreachable (not after timeouts, not as a hub bug), and
    `interlink agents` says it cannot reach NATS. When the server is back, the hub carries
    on by itself: the durable event published before the outage is handled, the live memory
    watch and the worker's call dispatch resume, and calls work again."""
    server = NatsServer(tmp_path / "nats").start()
    home = nats_home(tmp_path / "home", server.url)
    hub = HubProcess(home)
    await hub.start()
    health = hub.url.replace("ws://", "http://").replace("/ws", "/healthz")
    got: list[Any] = []
    worker = worker_agent(home, hub.url, got)
    try:
        await worker.start(wait=True)
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=hub.url) as alice:
            watch = await alice.memory("notes").watch("")
            assert await alice.call("worker", "echo", "before", timeout=10) == "before"
            server.stop(kill=True)

            async def said_down() -> bool:
                return httpx.get(health, timeout=5).status_code == 503
            await wait_until(said_down, timeout=10, interval=0.2)
            body = httpx.get(health, timeout=5).json()
            assert body["status"] == "store_unreachable" and "NATS" in body["store"]
            with pytest.raises(GateDenied) as refused:
                await asyncio.wait_for(alice.call("worker", "echo", "during", timeout=10), 15)
            assert refused.value.code == "store_unavailable"
            assert "cannot reach its store" in refused.value.reason
            listed = interlink_cli(home)("agents")
            assert listed.returncode != 0 and "cannot reach NATS" in listed.stderr

            server.start()

            async def said_up() -> bool:
                return httpx.get(health, timeout=5).status_code == 200
            await wait_until(said_up, timeout=20, interval=0.2)
            assert await alice.call("worker", "echo", "after", timeout=20) == "after"
            await alice.publish("news.today", {"n": 2})
            await alice.memory("notes").put("k", {"v": "after"})
            change = await watch.get(timeout=20)
            assert (change.key, change.value) == ("k", {"v": "after"})
            await wait_until(lambda: {"n": 2} in got, timeout=20)
            await watch.close()
    finally:
        await worker.stop()
        hub.stop()
        server.stop()


async def test_a_call_is_handed_to_its_callee_once(tmp_path: Path, nats_server: str) -> None:
    """A call is delivered from its commit step while the callee's dispatcher may already hold
    the same message (JetStream hands a waiting pull the message at once): only one of them
    may hand it over. Each extra delivery shows in the hub's log as a second reply refused."""
    home = nats_home(tmp_path / "home", nats_server)
    hub = HubProcess(home)
    await hub.start()
    worker = worker_agent(home, hub.url, [])
    try:
        await worker.start(wait=True)
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=hub.url) as alice:
            for i in range(30):
                assert await alice.call("worker", "echo", i, timeout=10) == i
    finally:
        await worker.stop()
        hub.stop()
    said = hub.log.read_text()
    assert "refused reply" not in said, said[-2000:]
