"""The causes of lost work found under a crash loop, each reproduced deterministically:

1. calls a dead hub's dispatcher had claimed but not yet offered are put back at the next start
   (not stranded for the consumer's 60 s ack-wait);
2. a durable consumer whose acks go missing does not stall: held-out events expire after its
   ack-wait and are redelivered, and acks have a rate budget of their own, so a burst of events
   to one handler is processed whole;
3. a request in flight when the connection drops fails at once with ConnectionLost, and an
   oversized envelope is refused at once, naming its id (not after the SDK's 30 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, ConnectionLost, Event, EventContext, GateDenied, SkillContext, connect
from interlink.envelope import new_id, new_traceparent, seal
from interlink.identity import CredentialFile
from interlink.server import background_hub
from interlink.store import open_store

from ..helpers import HubProcess, RawClient, free_port, make_home, wait_until


async def test_calls_claimed_by_a_dead_hub_are_offered_at_the_next_start(
        tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"caller": ["worker.*"], "worker": []})
    port = free_port()
    ran: list[int] = []
    first = background_hub(home, port=port)
    first_hub = await first.__aenter__()
    async with connect("caller", credential=home.credential_path("caller"),
                       hub=f"ws://127.0.0.1:{port}/ws") as caller:
        try:
            calls = [asyncio.ensure_future(caller.call("worker", "echo", {"n": i}, timeout=20,
                                                       call_id=f"claimed-{i}"))
                     for i in range(5)]
            hub = first_hub.hub
            # accepted and waiting for the (offline) worker
            await wait_until(lambda: hub.calls.open_calls("caller") == 5)
        finally:
            await first.__aexit__(None, None, None)
        # the hub is gone; what its dispatcher had claimed (fetched, not offered) when it died:
        async with open_store(f"sqlite:///{home.db_path}") as store:
            log = await store.log("calls")
            consumer = await log.consumer("to-worker", filter="call.worker", ack_wait=60.0,
                                          max_deliver=5, dead_letter="dead.call.worker")
            assert len(await consumer.fetch(32)) == 5
        worker = Agent("worker", credential=home.credential_path("worker"),
                       hub=f"ws://127.0.0.1:{port}/ws")

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: dict[str, Any]) -> int:
            ran.append(req["n"])
            return int(req["n"])

        async with background_hub(home, port=port), worker:
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*calls), 15)
            assert results == [0, 1, 2, 3, 4]
            assert time.monotonic() - started < 10  # not the 60 s ack-wait
    assert sorted(ran) == [0, 1, 2, 3, 4]  # each exactly once


async def test_a_consumer_whose_acks_go_missing_recovers_after_ack_wait(tmp_path: Path) -> None:
    """A subscriber that never acks the first events it holds: the pump does not stall at its
    in-flight limit; the held events come again after ack-wait, and everything arrives."""
    home = make_home(tmp_path / "home", {"pub": [], "sub": []})
    home.grant("pub", publish=["jobs.*"])
    home.grant("sub", subscribe=["jobs.*"])
    policy = home.load_policy()
    policy.hub.event_max_inflight = 4
    home.save_policy(policy)
    async with background_hub(home) as hub, \
            connect("pub", credential=home.credential_path("pub"), hub=hub.url) as pub, \
            connect("sub", credential=home.credential_path("sub"), hub=hub.url) as sub:
        stream = await sub.subscribe("jobs.*", durable="jobs", ack_wait=1.0)
        for i in range(10):
            await pub.publish("jobs.run", {"i": i})
        lost = [await stream.get(5) for _ in range(4)]  # held, never acked (acks "lost")
        assert sorted(e.data["i"] for e in lost) == [0, 1, 2, 3]
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while len(seen) < 10 and time.monotonic() < deadline:
            event = await stream.get(5)
            seen[event.data["i"]] = seen.get(event.data["i"], 0) + 1
            await event.ack()
        assert sorted(seen) == list(range(10))


async def test_a_burst_of_events_to_one_handler_is_processed_whole(tmp_path: Path) -> None:
    """With a tight data rate limit, the handler's acks are not refused (they have a budget of
    their own), so nothing is held out and every event runs exactly once."""
    home = make_home(tmp_path / "home", {"pub": [], "sub": []})
    home.grant("pub", publish=["jobs.*"])
    home.grant("sub", subscribe=["jobs.*"])
    policy = home.load_policy()
    policy.hub.rate_per_agent = 100
    policy.hub.rate_burst = 50
    policy.hub.event_max_inflight = 16
    home.save_policy(policy)
    handled: dict[int, int] = {}
    async with background_hub(home) as hub:
        agent = Agent("sub", credential=home.credential_path("sub"), hub=hub.url)

        @agent.on_event("jobs.*", durable="jobs")
        async def handle(ctx: EventContext, event: Event) -> None:
            handled[event.data["i"]] = handled.get(event.data["i"], 0) + 1

        async with agent, connect("pub", credential=home.credential_path("pub"),
                                  hub=hub.url) as pub:
            sent = 0
            while sent < 300:
                try:
                    await pub.publish("jobs.run", {"i": sent}, event_id=f"e-{sent}")
                    sent += 1
                except GateDenied as exc:
                    assert exc.code == "rate_limited"
                    await asyncio.sleep(0.05)
            await wait_until(lambda: len(handled) == 300, timeout=30)
            await asyncio.sleep(0.3)
    assert all(count == 1 for count in handled.values())


async def test_a_request_in_flight_fails_at_once_when_the_hub_dies(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"reader": []})
    home.grant("reader", memory={"notes": "read-write"})
    hub = HubProcess(home)
    await hub.start()
    try:
        async with connect("reader", credential=home.credential_path("reader"),
                           hub=hub.url) as reader:
            assert hub.proc is not None
            os.kill(hub.proc.pid, signal.SIGSTOP)  # the hub stops answering
            pending = asyncio.ensure_future(reader.memory("notes").get("k"))
            await asyncio.sleep(0.3)
            assert not pending.done()
            started = time.monotonic()
            hub.kill()  # the connection drops with the request in flight
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(pending, 10)
            assert time.monotonic() - started < 3  # not the 30 s request timeout
    finally:
        hub.stop()


async def test_an_oversized_envelope_is_refused_at_once(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"caller": ["worker.*"], "worker": []})
    async with background_hub(home) as hub:
        async with connect("caller", credential=home.credential_path("caller"),
                           hub=hub.url) as caller:
            started = time.monotonic()
            with pytest.raises(GateDenied) as refused:
                await caller.call("worker", "echo", "x" * 2_000_000, timeout=5)
            assert refused.value.code == "too_large"
            assert time.monotonic() - started < 1
            assert caller.connection.is_open  # and the connection is fine
        # a client that does not check: the hub names the envelope's id in its refusal
        cred = CredentialFile.load(home.credential_path("caller"))
        async with RawClient.open(hub.url) as raw:
            await raw.hello(cred)
            env = seal({"id": new_id(), "kind": "call", "sender": "caller",
                        "target": "worker.echo", "conversation": new_id(),
                        "traceparent": new_traceparent(), "body": {"pad": "y" * 1_100_000}},
                       cred.private())
            await raw.send(env)
            answer = await raw.answer_to(env["id"])
            assert answer["op"] == "refused" and answer["error"]["code"] == "too_large"



async def test_a_caller_that_talked_to_many_agents_is_still_served(tmp_path: Path) -> None:
    """Sticky taint gathers every agent a caller heard from into its provenance; past the
    bound it folds, and calls keep flowing (it once stopped the targets' dispatchers)."""
    names = [f"w{i:03d}" for i in range(80)]
    home = make_home(tmp_path / "home", {"caller": ["w*.echo"], **{n: [] for n in names}})
    async with background_hub(home) as hub:
        workers = []
        for name in names:
            worker = Agent(name, credential=home.credential_path(name), hub=hub.url)

            @worker.skill("echo")
            async def echo(ctx: SkillContext, req: Any) -> Any:
                return req

            workers.append(worker)
        await asyncio.gather(*(w.start() for w in workers))
        try:
            async with connect("caller", credential=home.credential_path("caller"),
                               hub=hub.url) as caller:
                for _ in range(2):
                    for name in names:
                        assert await caller.call(name, "echo", name, timeout=5) == name
                provenance = (await hub.hub.taint.of_agent("caller")).provenance
                assert "agent:+more" in provenance and len(provenance) <= 64
        finally:
            await asyncio.gather(*(w.stop() for w in workers))


async def test_a_hub_dying_mid_handshake_does_not_end_reconnecting(tmp_path: Path) -> None:
    """Found by the crash loop in CI: a hub killed between its challenge and its answer left
    the SDK's reconnect loop dead (the connection stayed "open", requests hung). A greeting cut
    short is now one more failed attempt; the next URL or the next try goes on."""
    import json as jsonlib

    from websockets.asyncio.server import serve as ws_serve

    async def cut_short(ws: Any) -> None:  # says hello like a hub, then dies
        await ws.send(jsonlib.dumps({"op": "challenge", "challenge": "c" * 32, "hub": "x"}))
        await ws.close()

    home = make_home(tmp_path / "home", {"caller": ["worker.*"], "worker": []})
    async with background_hub(home) as hub, ws_serve(cut_short, "127.0.0.1", 0) as fake:
        fake_url = f"ws://127.0.0.1:{fake.sockets[0].getsockname()[1]}/ws"
        worker = Agent("worker", credential=home.credential_path("worker"), hub=hub.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        async with worker, connect("caller", credential=home.credential_path("caller"),
                                   hub=[fake_url, hub.url]) as caller:
            assert caller.connection.url == hub.url  # the fake was tried first, and passed
            caller.connection.url = fake_url  # the next reconnect starts at the dying hub
            ws = caller.connection._ws
            assert ws is not None
            await ws.aclose()
            assert await asyncio.wait_for(caller.call("worker", "echo", 7, timeout=5), 10) == 7
            assert caller.connection.reconnects >= 1


async def test_a_call_delivered_from_its_commit_step_survives_a_crash_before_any_claim(
        tmp_path: Path) -> None:
    """A call to a connected target goes out from the commit step; if the hub dies before the
    target's dispatcher claimed its message, the store holds a record `delivered` to a dead
    session and a message nobody claimed. The next hub starts (putting it back used to be
    refused: "never delivered sequence …", and the hub did not start) and the call is
    delivered again. The state is written as that crash leaves it."""
    import json

    from interlink.services.calls import CallRecord

    from ..helpers import call_env
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    alice = CredentialFile.load(home.credential_path("alice"))
    wire = call_env(alice, "worker.echo", {"n": 1}, id="call-after-crash")
    now = time.time()
    home.db_path.parent.mkdir(parents=True, exist_ok=True)
    async with open_store(f"sqlite:///{home.db_path}") as store:
        log = await store.log("calls")
        appended = await log.append("call.worker", json.dumps({
            "wire": wire, "origin": alice.credential.model_dump(), "label": {}}).encode(),
            msg_id=wire["id"])
        kv = await store.kv("calls")
        await kv.create(wire["id"], CallRecord(
            id=wire["id"], caller="alice", target="worker", skill="echo",
            conversation=wire["conversation"], state="delivered", created=now,
            deadline=now + 60, timeout=60, seq=appended.seq, session="died-with-the-hub",
            deliveries=1).dump())
    ran: list[Any] = []
    async with background_hub(home) as hub:  # starts: nothing to put back is not an error
        worker = Agent("worker", credential=home.credential_path("worker"), hub=hub.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            ran.append(req)
            return req

        async with worker:
            await wait_until(lambda: ran, timeout=10)
            kv = await hub.hub.store.kv("calls")

            async def done() -> bool:
                entry = await kv.get(wire["id"])
                return entry is not None and CallRecord.model_validate_json(
                    entry.value or b"{}").state == "done"
            await wait_until(done, timeout=10)
    assert ran == [{"n": 1}]
