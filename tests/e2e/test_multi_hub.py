"""Several active hubs on one JetStream store, each its own process: an agent on one hub calls
an agent on another, events published through two hubs reach a subscriber on a third in one
order with one numbering, a memory write is seen by a watcher elsewhere, compare-and-swap holds
across hubs, a replay is refused by every hub, the audit chain stays one chain, and a hub
SIGKILLed during traffic loses nothing its agents were told was accepted."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, GateDenied, SkillContext, SkillFailed, connect
from interlink.home import MeshHome
from interlink.identity import CredentialFile
from interlink.sdk import StaleRevision
from interlink.store import open_store

from ..helpers import HubProcess, RawClient, call_env, interlink_cli, wait_until
from .test_nats_engine import nats_home


def mesh_home(root: Path, server: str) -> MeshHome:
    home = nats_home(root, server)
    home.grant("alice", subscribe=["news.*"], memory={"notes": "read-write"})
    home.grant("worker", publish=["news.*"], memory={"notes": "read-write"})
    home.add_agent("carol", calls=[])
    home.grant("carol", subscribe=["news.*"])
    return home


async def hubs(home: MeshHome, n: int) -> list[HubProcess]:
    started = []
    for _ in range(n):
        hub = HubProcess(home)
        await hub.start(timeout=30)
        started.append(hub)
    return started


async def test_calls_events_memory_and_cas_across_hubs(tmp_path: Path, nats_server: str) -> None:
    home = mesh_home(tmp_path / "home", nats_server)
    one, two, three = await hubs(home, 3)
    got: list[tuple[int, int, Any]] = []
    worker = Agent("worker", credential=home.credential_path("worker"), hub=two.url)

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return req

    try:
        await worker.start(wait=True)
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=one.url) as alice, \
                connect("worker", credential=home.credential_path("worker"),
                        hub=three.url) as publisher:
            # calls: alice on hub 1, the worker on hub 2
            assert [await alice.call("worker", "echo", i, timeout=20) for i in range(10)] == \
                list(range(10))
            many = await asyncio.gather(*(alice.call("worker", "echo", {"n": i}, timeout=30)
                                          for i in range(20)))
            assert many == [{"n": i} for i in range(20)]

            # events: published through hubs 1 and 3 at once, subscribed on hub 2
            async def on_news(ctx: Any, event: Any) -> None:
                got.append((event.seq, event.topic_seq, event.data))
            reader = Agent("carol", credential=home.credential_path("carol"), hub=two.url)
            reader.on_event("news.*", durable="across")(on_news)
            await reader.start(wait=True)
            try:
                async def send(mesh: Any, who: str, n: int) -> None:
                    for i in range(n):
                        await mesh.publish("news.today", {"from": who, "i": i})
                await asyncio.gather(send(alice, "alice", 500), send(publisher, "pub", 500))
                await wait_until(lambda: len(got) >= 1000, timeout=90, interval=0.2)
                await asyncio.sleep(0.5)  # nothing more (no duplicates) arrives
            finally:
                await reader.stop()
            assert len(got) == 1000
            assert [seq for seq, _, _ in got] == sorted(seq for seq, _, _ in got)  # log order
            assert [n for _, n, _ in got] == list(range(1, 1001))  # one numbering, no gaps
            for who in ("alice", "pub"):  # each publisher's own order kept
                assert [d["i"] for _, _, d in got if d["from"] == who] == list(range(500))

            # memory: written through hub 1, seen by a watcher on hub 3
            async with await publisher.memory("notes").watch("plan") as watch:
                await alice.memory("notes").put("plan", {"v": 1})
                change = await watch.get(timeout=20)
                assert (change.key, change.value, change.by) == ("plan", {"v": 1}, "alice")

            # compare-and-swap from two hubs at once: no lost update
            await alice.memory("notes").put("counter", {"n": 0})

            async def increment(mesh: Any, times: int) -> int:
                conflicts = 0
                for _ in range(times):
                    while True:
                        entry = await mesh.memory("notes").get("counter")
                        try:
                            await mesh.memory("notes").update(
                                "counter", {"n": entry.value["n"] + 1}, expect=entry.revision)
                            break
                        except StaleRevision:
                            conflicts += 1
                return conflicts
            conflicts = await asyncio.gather(increment(alice, 40), increment(publisher, 40))
            final = await alice.memory("notes").get("counter")
            assert final is not None and final.value == {"n": 80}
            assert sum(conflicts) > 0, "the two hubs never contended: the test proves nothing"
    finally:
        await worker.stop()
        for hub in (one, two, three):
            hub.stop()
    # one audit chain, written by three hubs, unforked
    verify = interlink_cli(home)("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    async with open_store(home.store_url()) as store:
        records = await (await store.log("audit")).read(subject="audit.record", limit=100_000)
    starts = [r for r in records if b'"hub_started"' in r.data]
    assert len(starts) == 3 and sum(b'"joined"' in r.data for r in starts) == 2


async def test_a_replay_to_another_hub_is_refused(tmp_path: Path, nats_server: str) -> None:
    """Both hubs run before the envelope is signed (their replay floors do not stop it): only
    the shared nonce log can tell hub 2 that hub 1 accepted it."""
    home = mesh_home(tmp_path / "home", nats_server)
    one, two = await hubs(home, 2)
    alice = CredentialFile.load(home.credential_path("alice"))
    try:
        captured = call_env(alice, "worker.echo", "once")
        async with RawClient.open(one.url) as raw:
            assert (await raw.hello(alice))["op"] == "accepted"
            await raw.send(captured)
            assert (await raw.answer_to(captured["id"]))["op"] == "accepted"
        for hub in (two, one):
            async with RawClient.open(hub.url) as raw:
                assert (await raw.hello(alice))["op"] == "accepted"
                await raw.send(captured)  # the same bytes, replayed
                answer = await raw.answer_to(captured["id"])
                assert answer["op"] == "refused", answer
                assert (answer["error"]["stage"], answer["error"]["code"]) == (
                    "authenticate", "replay")
    finally:
        one.stop()
        two.stop()


async def test_a_hub_killed_during_traffic_loses_nothing_accepted(tmp_path: Path,
                                                                  nats_server: str) -> None:
    """Two hubs; alice lists both and starts on hub 1, the worker is on hub 2. Hub 1 is
    SIGKILLed while alice calls and publishes: she moves to hub 2 and retries with the same
    ids; every call she was told was accepted runs once and is answered, every event she
    published is handled once."""
    home = mesh_home(tmp_path / "home", nats_server)
    one, two = await hubs(home, 2)
    runs: collections.Counter[str] = collections.Counter()
    handled: collections.Counter[int] = collections.Counter()
    worker = Agent("worker", credential=home.credential_path("worker"), hub=two.url)

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        runs[str(req["i"])] += 1
        return req

    @worker.on_event("news.*", durable="kept")
    async def news(ctx: Any, event: Any) -> None:
        handled[event.data["i"]] += 1

    answered: dict[int, Any] = {}
    published: list[int] = []
    try:
        await worker.start(wait=True)
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=[one.url, two.url]) as alice:
            async def traffic() -> None:
                for i in range(150):
                    answered[i] = await alice.call("worker", "echo", {"i": i}, timeout=60)
                    await alice.publish("news.today", {"i": i}, event_id=f"event-{i}")
                    published.append(i)

            work = asyncio.ensure_future(traffic())
            await wait_until(lambda: len(answered) >= 40, timeout=60, interval=0.05)
            one.kill()
            await asyncio.wait_for(work, 120)
        await wait_until(lambda: set(handled) >= set(published), timeout=90, interval=0.2)
    finally:
        await worker.stop()
        two.stop()
        if one.proc is not None and one.proc.poll() is None:
            one.kill()
    assert all(answered[i] == {"i": i} for i in range(150))
    assert sorted(int(k) for k in runs) == list(range(150))
    assert max(runs.values()) == 1, [k for k, n in runs.items() if n > 1]
    assert sorted(handled) == list(range(150)) and max(handled.values()) == 1


async def test_progress_budgets_and_breakers_hold_across_hubs(tmp_path: Path,
                                                              nats_server: str) -> None:
    """What containment counts is counted once for the mesh: a conversation's budget spent
    through two hubs, a breaker opened by the hub that saw the failures refusing calls made
    through another hub; and a callee's progress reaches a caller on another hub."""
    home = mesh_home(tmp_path / "home", nats_server)
    policy = home.load_policy()
    policy.hub.conversation_max_messages = 5
    policy.hub.breaker_min_calls, policy.hub.breaker_window = 3, 4
    policy.hub.breaker_open_seconds = 60.0
    home.save_policy(policy)
    one, two = await hubs(home, 2)
    worker = Agent("worker", credential=home.credential_path("worker"), hub=two.url)

    @worker.skill("slow")
    async def slow(ctx: SkillContext, req: Any) -> Any:
        await ctx.progress("half way", extend=5)
        await asyncio.sleep(0.5)
        return "done"

    @worker.skill("broken")
    async def broken(ctx: SkillContext, req: Any) -> Any:
        raise RuntimeError("always fails")

    try:
        await worker.start(wait=True)
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=one.url) as alice, \
                connect("worker", credential=home.credential_path("worker"),
                        hub=two.url) as publisher:
            notes: list[dict[str, Any]] = []
            assert await alice.call("worker", "slow", None, timeout=10,
                                    on_progress=notes.append) == "done"
            assert [n.get("note") for n in notes] == ["half way"]

            # a budget of 5 messages, spent through both hubs
            for i in range(5):
                mesh = alice if i % 2 else publisher
                await mesh.connection.publish("news.today", {"i": i}, conversation="budget-1")
            for mesh in (alice, publisher):
                with pytest.raises(GateDenied) as over:
                    await mesh.connection.publish("news.today", {"i": 5},
                                                 conversation="budget-1")
                assert (over.value.stage, over.value.code) == ("guard", "budget_exhausted")

            # the failures are settled on hub 2 (the callee's); hub 1 counts them too: with 3
            # outcomes (the slow call's success among them) its breaker opens
            failures = 0
            while True:
                try:
                    await alice.call("worker", "broken", None, timeout=10)
                except SkillFailed:
                    failures += 1
                    assert failures <= 3, "hub 1 never counted the failures hub 2 settled"
                    await asyncio.sleep(0.3)
                    continue
                except GateDenied as exc:
                    assert exc.code == "circuit_open", exc
                    break
            assert failures >= 2
    finally:
        await worker.stop()
        one.stop()
        two.stop()


async def test_an_agent_that_moved_to_another_hub_stays_present(tmp_path: Path,
                                                                nats_server: str) -> None:
    """The worker connects to hub 2 while its old connection on hub 1 is still open, then the
    old one closes: hub 1 must not mark the agent offline (its presence is hub 2's now), and
    calls through hub 1 still reach it."""
    home = mesh_home(tmp_path / "home", nats_server)
    one, two = await hubs(home, 2)
    old = Agent("worker", credential=home.credential_path("worker"), hub=one.url)
    new = Agent("worker", credential=home.credential_path("worker"), hub=two.url)
    for agent in (old, new):
        @agent.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req
    try:
        await old.start(wait=True)
        await new.start(wait=True)
        await old.stop()
        await wait_until(lambda: "disconnected worker" in one.log.read_text(), timeout=10)
        listed = interlink_cli(home)("agents", "--json")
        assert listed.returncode == 0, listed.stderr
        status = {a["name"]: a for a in json.loads(listed.stdout)}
        assert status["worker"]["connected"] is True, status["worker"]
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=one.url) as alice:
            assert await alice.call("worker", "echo", "still here", timeout=10) == "still here"
    finally:
        await new.stop()
        one.stop()
        two.stop()
