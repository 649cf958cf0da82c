"""Events survive a hub killed with SIGKILL mid-stream: every acknowledged publish is processed
exactly once by an idempotent durable consumer, in per-topic order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlink import connect
from interlink.home import MeshHome

from ..helpers import HubProcess, make_home, wait_until

TOPICS = ("orders.eu", "orders.us")
EVENTS = 240


@pytest.fixture
async def proc(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, HubProcess]]:
    home = make_home(tmp_path / "home", {"shop": [], "billing": []})
    home.grant("shop", publish=["orders.*"])
    home.grant("billing", subscribe=["orders.>"])
    hub = HubProcess(home)
    await hub.start()
    try:
        yield home, hub
    finally:
        hub.stop()


async def test_sigkill_while_publishing_and_consuming_loses_and_repeats_nothing(
        proc: tuple[MeshHome, HubProcess]) -> None:
    home, hub = proc
    acknowledged: dict[str, tuple[str, int]] = {}  # event id -> (topic, topic_seq)
    processed: list[tuple[str, int, str]] = []      # first processing: (topic, topic_seq, id)
    done: set[str] = set()                           # the consumer's idempotency record
    redelivered_after_processing = 0

    async with connect("shop", credential=home.credential_path("shop"), hub=hub.url) as shop, \
            connect("billing", credential=home.credential_path("billing"),
                    hub=hub.url) as billing:
        sub = await billing.subscribe("orders.>", durable="billing", ack_wait=5.0)

        async def publisher() -> None:
            for i in range(EVENTS):
                event_id = f"order-{i}"
                answer = await shop.publish(TOPICS[i % 2], {"n": i}, event_id=event_id)
                acknowledged[event_id] = (answer["topic"], answer["topic_seq"])

        async def consumer() -> None:
            nonlocal redelivered_after_processing
            async for event in sub:
                if event.id in done:
                    redelivered_after_processing += 1
                else:
                    processed.append((event.topic, event.topic_seq, event.id))
                    done.add(event.id)
                await event.ack()

        pub_task = asyncio.ensure_future(publisher())
        con_task = asyncio.ensure_future(consumer())
        await wait_until(lambda: len(processed) >= EVENTS // 4, timeout=30)
        hub.kill()  # mid-stream: publishes and acks are in flight
        killed_at = len(acknowledged)
        await asyncio.sleep(0.3)
        await hub.start()
        await asyncio.wait_for(pub_task, 60)
        await wait_until(lambda: len(processed) >= EVENTS, timeout=60)
        await asyncio.sleep(0.5)  # anything extra would show up now
        con_task.cancel()

    assert 0 < killed_at < EVENTS, "the kill did not land mid-stream"
    assert len(acknowledged) == EVENTS
    ids = [event_id for _, _, event_id in processed]
    assert len(ids) == len(set(ids)) == EVENTS           # processed exactly once each
    assert set(ids) == set(acknowledged)                 # every acknowledged event arrived
    for topic in TOPICS:
        seqs = [seq for t, seq, _ in processed if t == topic]
        assert seqs == list(range(1, EVENTS // 2 + 1)), f"{topic} out of order or with gaps"
        assert sorted(s for t, s in acknowledged.values() if t == topic) == seqs
    print(f"killed after {killed_at} acknowledged publishes; "
          f"{redelivered_after_processing} redeliveries absorbed by idempotency")
