"""The contract's clocks in real time, on every engine.

The tests beside these drive time with an injected clock, which an engine whose server stamps
the time (JetStream) cannot take; these check the same promises with real, short durations, so
no engine skips them: ack-wait, nak delay, in-progress, term, time-to-live, the dedup window and
the time stamps themselves. (They sleep on purpose: time passing is what they test.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from interlink.errors import KeyExists
from interlink.store import AppendResult, Log, Store

from .conftest import Fresh


async def _log_with(store: Store, name: str, *subjects: str) -> Log:
    log = await store.log(name)
    for subject in subjects:
        await log.append(subject, b"m")
    return log


async def test_unacked_message_comes_back_after_ack_wait(store: Store, fresh: Fresh) -> None:
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=0.5)
    assert [m.seq for m in await consumer.fetch()] == [1]
    assert await consumer.fetch() == []  # held out while its ack-wait runs
    started = time.monotonic()
    [again] = await consumer.fetch(timeout=3.0)
    assert (again.seq, again.deliveries) == (1, 2)
    assert time.monotonic() - started > 0.3


async def test_nak_with_delay_holds_the_message_back(store: Store, fresh: Fresh) -> None:
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=30.0)
    [message] = await consumer.fetch()
    started = time.monotonic()
    await consumer.nak(message.seq, delay=0.5)
    assert await consumer.fetch() == []
    [again] = await consumer.fetch(timeout=3.0)
    assert again.seq == 1 and time.monotonic() - started > 0.4


async def test_in_progress_restarts_the_ack_wait(store: Store, fresh: Fresh) -> None:
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=1.0)
    assert [m.seq for m in await consumer.fetch()] == [1]
    await asyncio.sleep(0.6)
    await consumer.in_progress(1)
    await asyncio.sleep(0.6)  # 1.2 s after the fetch, 0.6 s after in_progress
    assert await consumer.fetch() == []
    assert [m.seq for m in await consumer.fetch(timeout=3.0)] == [1]


async def test_a_terminated_message_stays_away(store: Store, fresh: Fresh) -> None:
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=0.3)
    assert [m.seq for m in await consumer.fetch()] == [1]
    await consumer.term(1)
    assert await consumer.fetch(timeout=0.8) == []
    assert (await consumer.info()).ack_floor == 1


async def test_a_time_to_live_hides_the_entry_and_frees_the_key(store: Store,
                                                                fresh: Fresh) -> None:
    kv = await store.kv(fresh("kv"))
    await kv.create("lease", b"old", ttl=0.4)
    await kv.put("other", b"stays")
    entry = await kv.get("lease")
    assert entry is not None and entry.expires == pytest.approx(entry.ts + 0.4)
    assert abs(entry.ts - time.time()) < 5  # stamped now (by the engine or its server)
    with pytest.raises(KeyExists):
        await kv.create("lease", b"new")
    await asyncio.sleep(0.6)
    assert await kv.get("lease") is None
    assert await kv.keys() == ["other"]
    await kv.create("lease", b"new")
    assert [e.op for e in await kv.history("lease")] == ["put", "del", "put"]


async def test_a_msg_id_is_stored_again_once_its_window_passed(store: Store,
                                                               fresh: Fresh) -> None:
    log = await store.log(fresh("orders"), dedup_window=0.3)
    first = await log.append("orders.eu", b"a", msg_id="m-1")
    assert await log.append("orders.eu", b"a", msg_id="m-1") == AppendResult(first.seq, True)
    await asyncio.sleep(0.6)
    again = await log.append("orders.eu", b"a", msg_id="m-1")
    assert (again.seq, again.duplicate) == (first.seq + 1, False)
    [message] = await log.read(again.seq)
    assert message.msg_id == "m-1" and abs(message.ts - time.time()) < 5
