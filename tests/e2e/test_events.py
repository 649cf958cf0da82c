"""The event bus through a real hub (in-process uvicorn, real WebSockets, SQLite store)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, Event, EventContext, GateDenied, Mesh, connect
from interlink.home import MeshHome
from interlink.server import RunningHub, background_hub

from ..helpers import applied, audit_records, make_home, wait_until

GRANTS = {
    "drafter": {"publish": ["blog.>"], "subscribe": ["blog.>"]},
    "editor": {"publish": ["blog.reviews.*"], "subscribe": ["blog.drafts.*", "$dead.*"]},
    "herald": {"subscribe": ["blog.drafts.*"]},
    "herald2": {"subscribe": ["blog.drafts.*"]},
    "outsider": {},
}


@pytest.fixture
def bus_home(tmp_path: Path) -> MeshHome:
    home = make_home(tmp_path / "home", {name: [] for name in GRANTS})
    for name, grants in GRANTS.items():
        if grants:
            home.grant(name, **grants)
    return home


@pytest.fixture
async def bus(bus_home: MeshHome) -> AsyncIterator[RunningHub]:
    async with background_hub(bus_home) as running:
        yield running


def client(home: MeshHome, hub: RunningHub, name: str) -> Mesh:
    return connect(name, credential=home.credential_path(name), hub=hub.url)


async def drain(sub: Any, n: int, timeout: float = 5.0) -> list[Event]:
    return [await sub.get(timeout) for _ in range(n)]


async def test_publish_reaches_wildcard_subscribers_in_order(bus_home: MeshHome,
                                                            bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub, client(bus_home, bus, "editor") as ed:
        one = await ed.subscribe("blog.drafts.*")
        rest = await pub.subscribe("blog.>")
        answers = [await pub.publish("blog.drafts.created", {"n": i}) for i in range(3)]
        await pub.publish("blog.reviews.done", {"n": 99})
        assert [a["topic_seq"] for a in answers] == [1, 2, 3]
        assert all(not a["duplicate"] for a in answers)
        got = await drain(one, 3)
        assert [e.data["n"] for e in got] == [0, 1, 2]
        assert [e.topic_seq for e in got] == [1, 2, 3]
        assert {e.sender for e in got} == {"drafter"}
        assert got[0].seq < got[1].seq < got[2].seq
        everything = await drain(rest, 4)
        assert [e.topic for e in everything] == ["blog.drafts.created"] * 3 + ["blog.reviews.done"]
        with pytest.raises(asyncio.TimeoutError):
            await one.get(0.3)  # blog.reviews.done does not match blog.drafts.*


async def test_retried_publish_is_not_a_second_event(bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub, client(bus_home, bus, "editor") as ed:
        sub = await ed.subscribe("blog.drafts.*")
        first = await pub.publish("blog.drafts.created", {"v": 1}, event_id="evt-1")
        again = await pub.publish("blog.drafts.created", {"v": 1}, event_id="evt-1")
        assert again["duplicate"] is True
        assert (again["seq"], again["topic_seq"]) == (first["seq"], first["topic_seq"])
        [event] = await drain(sub, 1)
        assert event.id == "evt-1"
        with pytest.raises(asyncio.TimeoutError):
            await sub.get(0.3)


async def test_durable_consumer_resumes_after_last_ack(bus_home: MeshHome,
                                                      bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub:
        async with client(bus_home, bus, "herald") as herald:
            sub = await herald.subscribe("blog.drafts.*", durable="heralds")
            for i in range(3):
                await pub.publish("blog.drafts.created", {"n": i})
            got = await drain(sub, 3)
            await got[0].ack()
            await got[1].ack()  # the third stays unacknowledged
        for i in range(3, 5):  # published while nobody listens
            await pub.publish("blog.drafts.created", {"n": i})
        async with client(bus_home, bus, "herald") as herald:
            sub = await herald.subscribe("blog.drafts.*", durable="heralds")
            again = await drain(sub, 3)
            assert [e.data["n"] for e in again] == [2, 3, 4]
            assert again[0].deliveries == 2  # redelivered: it was never acked
            for e in again:
                await e.ack()
            info = {c.name: c for c in await bus.hub.events.log.consumers()}["heralds"]
            assert (info.num_pending, info.ack_pending) == (0, 0)


async def test_nak_redelivers_and_max_deliver_dead_letters(bus_home: MeshHome,
                                                          bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub, client(bus_home, bus, "editor") as ed:
        dead = await ed.subscribe("$dead.reviewers")
        sub = await ed.subscribe("blog.drafts.*", durable="reviewers", max_deliver=3)
        await pub.publish("blog.drafts.created", {"poison": True})
        deliveries = []
        for _ in range(3):
            event = await sub.get(5)
            deliveries.append(event.deliveries)
            await event.nak()
        assert deliveries == [1, 2, 3]
        letter = await dead.get(5)
        assert letter.data == {"poison": True}
        assert letter.dead is not None and letter.dead["reason"] == "max_deliver"
        assert letter.dead["deliveries"] == "3"
        assert letter.dead["original-subject"] == "blog.drafts.created"
        assert letter.sender == "drafter"  # still the publisher's signed envelope
        with pytest.raises(asyncio.TimeoutError):
            await sub.get(0.5)
        info = {c.name: c for c in await bus.hub.events.log.consumers()}["reviewers"]
        assert info.dead_lettered == 1


async def test_ack_wait_redelivers_unacknowledged(bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub, client(bus_home, bus, "editor") as ed:
        sub = await ed.subscribe("blog.drafts.*", durable="slowpoke", ack_wait=0.4)
        await pub.publish("blog.drafts.created", {"n": 1})
        first = await sub.get(5)
        started = time.monotonic()
        second = await sub.get(5)  # never acked: comes back after ack_wait
        assert second.seq == first.seq and second.deliveries == 2
        assert time.monotonic() - started >= 0.3
        await second.ack()
        with pytest.raises(asyncio.TimeoutError):
            await sub.get(0.8)


async def test_consumer_group_shares_events(bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub, \
            client(bus_home, bus, "herald") as h1, client(bus_home, bus, "herald2") as h2:
        s1 = await h1.subscribe("blog.drafts.*", durable="fanout", deliver="new")
        s2 = await h2.subscribe("blog.drafts.*", durable="fanout")
        seen: dict[str, list[int]] = {"h1": [], "h2": []}

        async def work(name: str, sub: Any) -> None:
            async for event in sub:
                seen[name].append(event.data["n"])
                await event.ack()

        workers = [asyncio.ensure_future(work("h1", s1)), asyncio.ensure_future(work("h2", s2))]
        for i in range(40):
            await pub.publish("blog.drafts.created", {"n": i})
        await wait_until(lambda: len(seen["h1"]) + len(seen["h2"]) >= 40, timeout=10)
        await asyncio.sleep(0.2)
        for task in workers:
            task.cancel()
        everyone = sorted(seen["h1"] + seen["h2"])
        assert everyone == list(range(40))  # each event to exactly one member
        assert seen["h1"] and seen["h2"], f"one member got nothing: {seen}"


async def test_replay_from_sequence_and_time(bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub:
        answers = [await pub.publish("blog.drafts.created", {"n": i}) for i in range(5)]
        await asyncio.sleep(0.05)
        middle = time.time()
        await asyncio.sleep(0.05)
        later = [await pub.publish("blog.drafts.created", {"n": i}) for i in range(5, 8)]
        from_seq = await pub.subscribe("blog.drafts.*", from_seq=answers[2]["seq"])
        assert [e.data["n"] for e in await drain(from_seq, 6)] == [2, 3, 4, 5, 6, 7]
        since = await pub.subscribe("blog.drafts.*", since=middle)
        assert [e.data["n"] for e in await drain(since, 3)] == [5, 6, 7]
        assert later[-1]["topic_seq"] == 8
        everything = await pub.subscribe("blog.drafts.*", deliver="all")
        assert [e.topic_seq for e in await drain(everything, 8)] == list(range(1, 9))


async def test_live_subscription_resumes_without_gap_after_hub_restart(tmp_path: Path,
                                                                       bus_home: MeshHome) -> None:
    from ..helpers import free_port
    port = free_port()
    async with background_hub(bus_home, port=port) as running:
        url = running.url
        sub_client = client(bus_home, running, "editor")
        await sub_client.__aenter__()
        sub = await sub_client.subscribe("blog.drafts.*")
        async with client(bus_home, running, "drafter") as pub:
            await pub.publish("blog.drafts.created", {"n": 0})
        assert (await sub.get(5)).data == {"n": 0}
    async with background_hub(bus_home, port=port) as running:
        assert running.url == url
        async with client(bus_home, running, "drafter") as pub:
            await pub.publish("blog.drafts.created", {"n": 1})
            await pub.publish("blog.drafts.created", {"n": 2})
        got = await drain(sub, 2, timeout=10)
        assert [e.data["n"] for e in got] == [1, 2]
        await sub_client.aclose()


async def test_agent_on_event_handler_acks_and_retries(bus_home: MeshHome,
                                                       bus: RunningHub) -> None:
    editor = Agent("editor", credential=bus_home.credential_path("editor"), hub=bus.url)
    handled: list[tuple[int, int]] = []

    @editor.on_event("blog.drafts.*", durable="editor-drafts", retry_delay=0.05)
    async def on_draft(ctx: EventContext, event: Event) -> None:
        handled.append((event.data["n"], event.deliveries))
        if event.data["n"] == 1 and event.deliveries == 1:
            raise RuntimeError("flaky once")
        await ctx.publish("blog.reviews.queued", {"n": event.data["n"]})

    async with editor, client(bus_home, bus, "drafter") as pub:
        reviews = await pub.subscribe("blog.reviews.*")
        for i in range(3):
            await pub.publish("blog.drafts.created", {"n": i})
        queued = sorted(e.data["n"] for e in await drain(reviews, 3))
        assert queued == [0, 1, 2]
        assert (1, 1) in handled and (1, 2) in handled  # failed once, redelivered, succeeded

        async def settled() -> bool:
            info = {c.name: c for c in await bus.hub.events.log.consumers()}["editor-drafts"]
            return info.ack_pending == 0 and info.num_pending == 0
        await wait_until(settled)


async def test_events_carry_the_publishers_signature(bus_home: MeshHome,
                                                     bus: RunningHub) -> None:
    from interlink.envelope import check_signature
    async with client(bus_home, bus, "drafter") as pub, client(bus_home, bus, "editor") as ed:
        sub = await ed.subscribe("blog.drafts.*")
        await pub.publish("blog.drafts.created", {"n": 1})
        event = await sub.get(5)
        from interlink.identity import CredentialFile
        drafter_key = CredentialFile.load(
            bus_home.credential_path("drafter")).credential.key()
        assert check_signature(event.envelope, drafter_key)
        tampered = {**event.envelope, "target": "blog.drafts.deleted"}
        assert not check_signature(tampered, drafter_key)


# -- schemas --------------------------------------------------------------------------------

DRAFT_V1 = {"type": "object", "properties": {"title": {"type": "string"}},
            "required": ["title"]}


async def test_topic_schema_validates_and_evolves(bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub:
        first = await pub.register_schema("blog.drafts.created", DRAFT_V1)
        assert first["version"] == 1
        await pub.publish("blog.drafts.created", {"title": "ok"})
        with pytest.raises(GateDenied) as bad:
            await pub.publish("blog.drafts.created", {"title": 5})
        assert (bad.value.stage, bad.value.code) == ("validate", "schema_mismatch")
        assert "/title" in bad.value.reason and "version 1" in bad.value.reason
        v2 = {**DRAFT_V1, "properties": {"title": {"type": "string"},
                                         "words": {"type": "integer"}}}
        assert (await pub.register_schema("blog.drafts.created", v2))["version"] == 2
        await pub.publish("blog.drafts.created", {"title": "ok", "words": 3})
        with pytest.raises(GateDenied) as dropped:
            await pub.register_schema("blog.drafts.created",
                                      {"type": "object", "properties": {"words": {
                                          "type": "integer"}}})
        assert dropped.value.code == "incompatible_schema"
        assert "title" in dropped.value.reason
        with pytest.raises(GateDenied) as retyped:
            await pub.register_schema("blog.drafts.created", {
                **v2, "properties": {"title": {"type": "integer"}, "words": {"type": "integer"}}})
        assert retyped.value.code == "incompatible_schema" and "type" in retyped.value.reason
        with pytest.raises(GateDenied) as not_schema:
            await pub.register_schema("blog.drafts.created", {"type": "nonsense"})
        assert not_schema.value.code == "bad_schema"
    records = await audit_records(bus_home)
    refused = [r for r in records if r.get("code") == "incompatible_schema"]
    assert len(refused) == 2


# -- grants and bad input -------------------------------------------------------------------

async def test_ungranted_publish_and_subscribe_are_refused_with_the_rule(
        bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "outsider") as out, \
            client(bus_home, bus, "herald") as herald:
        with pytest.raises(GateDenied) as pub:
            await out.publish("blog.drafts.created", {"x": 1})
        assert (pub.value.stage, pub.value.code) == ("authorize", "not_granted")
        assert "agents.outsider.publish" in (pub.value.rule or "")
        with pytest.raises(GateDenied) as wider:
            await herald.subscribe("blog.>")  # granted only blog.drafts.*
        assert wider.value.code == "not_granted" and "covers" in (wider.value.rule or "")
        with pytest.raises(GateDenied) as dead:
            await herald.subscribe("$dead.reviewers")
        assert dead.value.code == "not_granted"
        ok = await herald.subscribe("blog.drafts.created")  # narrower than the grant: fine
        await ok.close()
    records = await audit_records(bus_home)
    assert sum(1 for r in records if r.get("code") == "not_granted") == 3


async def test_policy_edit_grants_publish_without_restart(bus_home: MeshHome,
                                                          bus: RunningHub) -> None:
    async with client(bus_home, bus, "outsider") as out:
        with pytest.raises(GateDenied):
            await out.publish("blog.drafts.created", {"x": 1})
        bus_home.grant("outsider", publish=["blog.drafts.*"])
        await applied(bus)
        answer = await out.publish("blog.drafts.created", {"x": 1})
        assert answer["topic_seq"] == 1


@pytest.mark.parametrize(("topic", "code", "phrase"), [
    ("blog..created", "bad_topic", "empty token"),
    ("blog.drafts.*", "bad_topic", "wildcards are for subscriptions"),
    ("blog.drafts created", "bad_topic", "bad token"),
    ("$dead.reviewers", "bad_topic", "belong to the hub"),
    ("x." * 20 + "x", "bad_topic", "tokens"),
])
async def test_bad_topics_are_refused(bus_home: MeshHome, bus: RunningHub, topic: str,
                                      code: str, phrase: str) -> None:
    async with client(bus_home, bus, "drafter") as pub:
        with pytest.raises(GateDenied) as bad:
            await pub.publish(topic, {"x": 1})
        assert bad.value.code == code and phrase in bad.value.reason
        assert (await pub.publish("blog.drafts.created", {"fine": True}))["topic_seq"] == 1


@pytest.mark.parametrize(("pattern", "options", "code", "phrase"), [
    ("blog.>.x", {}, "bad_pattern", "last token"),
    ("blog..x", {}, "bad_pattern", "empty token"),
    ("blog.drafts.*", {"durable": "bad name!"}, "bad_request", "consumer name"),
    ("blog.drafts.*", {"durable": "d", "from_seq": 3}, "bad_request", "resumes after"),
    ("blog.drafts.*", {"deliver": "sometimes"}, "bad_request", "deliver"),
    ("blog.drafts.*", {"from_seq": -1}, "bad_request", "positive"),
])
async def test_bad_subscriptions_are_refused(bus_home: MeshHome, bus: RunningHub, pattern: str,
                                             options: dict[str, Any], code: str,
                                             phrase: str) -> None:
    async with client(bus_home, bus, "drafter") as mesh:
        with pytest.raises(GateDenied) as bad:
            await mesh.subscribe(pattern, **options)
        assert bad.value.code == code and phrase in bad.value.reason


async def test_consumer_filter_conflict_is_refused(bus_home: MeshHome, bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as mesh:
        await mesh.subscribe("blog.drafts.*", durable="shared")
        with pytest.raises(GateDenied) as bad:
            await mesh.subscribe("blog.reviews.*", durable="shared")
        assert bad.value.code == "consumer_conflict" and "blog.drafts.*" in bad.value.reason


async def test_oversized_event_is_refused_and_hub_keeps_serving(bus_home: MeshHome,
                                                               bus: RunningHub) -> None:
    limit = bus.hub.settings.max_event_bytes
    async with client(bus_home, bus, "drafter") as pub:
        with pytest.raises(GateDenied) as big:
            await pub.publish("blog.drafts.created", {"text": "x" * (limit + 10)})
        assert (big.value.stage, big.value.code) == ("validate", "too_large")
        assert str(limit) in big.value.reason
        assert (await pub.publish("blog.drafts.created", {"text": "small"}))["topic_seq"] == 1


async def test_acks_for_unknown_consumers_and_undelivered_events(bus_home: MeshHome,
                                                                 bus: RunningHub) -> None:
    async with client(bus_home, bus, "drafter") as pub, client(bus_home, bus, "editor") as ed:
        conn = ed.connection
        with pytest.raises(GateDenied) as unknown:
            await conn.settle_event("nobody", 1, "ack", 0.0)
        assert unknown.value.code == "not_subscribed"
        sub = await ed.subscribe("blog.drafts.*", durable="reviewers")
        await pub.publish("blog.drafts.created", {"n": 1})
        event = await sub.get(5)
        with pytest.raises(GateDenied) as never:
            await conn.settle_event("reviewers", event.seq + 100, "ack", 0.0)
        assert never.value.code == "not_delivered"
        with pytest.raises(GateDenied) as bad_action:
            await conn.settle_event("reviewers", event.seq, "explode", 0.0)
        assert bad_action.value.code == "bad_request"
        await event.ack()
        await conn.settle_event("reviewers", event.seq, "ack", 0.0)  # twice is harmless
        with pytest.raises(GateDenied) as foreign:  # herald does not hold this consumer
            async with client(bus_home, bus, "herald") as herald:
                await herald.connection.settle_event("reviewers", event.seq, "ack", 0.0)
        assert foreign.value.code == "not_subscribed"


async def test_defaults_do_not_cap_one_agent_below_the_hub(bus_home: MeshHome,
                                                           bus: RunningHub) -> None:
    """The default policy sets no per-agent rate: one publisher with many events in flight is
    limited by what the hub carries, never refused `rate_limited` (the benchmark used to die
    here at 500 envelopes/s)."""
    async with client(bus_home, bus, "drafter") as pub:
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> dict[str, Any]:
            async with gate:
                return await pub.publish("blog.drafts.created", {"n": i})

        answers = await asyncio.gather(*(one(i) for i in range(1500)))
    assert sorted(a["topic_seq"] for a in answers) == list(range(1, 1501))


async def test_event_retention_removes_old_events_and_numbering_goes_on(
        bus_home: MeshHome) -> None:
    """`hub.event_retention_seconds`: events older than it leave the log (a replaying
    subscriber no longer sees them), and the topic's numbering continues past them (a topic
    idle for longer than the retention, its every event gone, numbers afresh: see README)."""
    policy = bus_home.load_policy()
    policy.hub.event_dedup_seconds, policy.hub.event_retention_seconds = 0.2, 0.5
    bus_home.save_policy(policy)
    async with background_hub(bus_home) as hub, client(bus_home, hub, "drafter") as pub:
        assert (await pub.publish("blog.drafts.old", {"n": 1}))["topic_seq"] == 1
        await asyncio.sleep(1.0)
        assert (await pub.publish("blog.drafts.old", {"n": 2}))["topic_seq"] == 2
        replay = await pub.subscribe("blog.>", deliver="all")
        [kept] = await drain(replay, 1)
        assert kept.data == {"n": 2}
        with pytest.raises(TimeoutError):
            await replay.get(0.5)
