"""Durable consumers: fetch, ack, nak, ack-wait, in_progress, term, max_deliver, groups."""

from __future__ import annotations

import asyncio

import pytest

from interlink.errors import NotFound, StoreError
from interlink.store import Log, Store

from .conftest import FakeClock, Fresh, MakeStore


async def _log_with(store: Store, name: str, *subjects: str) -> Log:
    log = await store.log(name)
    for i, subject in enumerate(subjects, start=1):
        await log.append(subject, f"m{i}".encode())
    return log


async def test_acked_message_is_not_delivered_again(store: Store, fresh: Fresh) -> None:
    """A fetched message that is acknowledged is never fetched again."""
    log = await _log_with(store, fresh("orders"), "orders.eu", "orders.us")
    consumer = await log.consumer(fresh("c"))
    first = await consumer.fetch(2)
    assert [(m.seq, m.data, m.deliveries) for m in first] == [(1, b"m1", 1), (2, b"m2", 1)]
    await consumer.ack(1)
    await consumer.ack(2)
    assert await consumer.fetch(5) == []


async def test_consumer_gets_only_messages_matching_its_filter(store: Store,
                                                              fresh: Fresh) -> None:
    """A consumer's filter selects which messages it is handed."""
    log = await _log_with(store, fresh("orders"), "orders.eu", "refunds.eu", "orders.us.x")
    consumer = await log.consumer(fresh("c"), filter="orders.*")
    assert [m.seq for m in await consumer.fetch(10)] == [1]


async def test_nak_redelivers_with_a_higher_delivery_count(store: Store, fresh: Fresh) -> None:
    """A nacked message is delivered again at once, its deliveries counting up."""
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"))
    [message] = await consumer.fetch()
    assert await consumer.fetch() == []
    await consumer.nak(message.seq)
    [again] = await consumer.fetch()
    assert (again.seq, again.deliveries) == (1, 2)


async def test_nak_with_delay_redelivers_only_after_the_delay(make_store: MakeStore,
                                                              clock: FakeClock,
                                                              fresh: Fresh) -> None:
    """nak(delay=d) holds the message back for d seconds."""
    store = await make_store(clock=clock)
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=60.0)
    [message] = await consumer.fetch()
    await consumer.nak(message.seq, delay=10.0)
    clock.advance(9.0)
    assert await consumer.fetch() == []
    clock.advance(1.0)
    assert [m.seq for m in await consumer.fetch()] == [1]


async def test_unacked_message_is_redelivered_after_ack_wait(make_store: MakeStore,
                                                             clock: FakeClock,
                                                             fresh: Fresh) -> None:
    """A message not acknowledged within ack_wait is delivered again."""
    store = await make_store(clock=clock)
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=30.0)
    assert [m.seq for m in await consumer.fetch()] == [1]
    clock.advance(29.0)
    assert await consumer.fetch() == []
    clock.advance(1.0)
    [again] = await consumer.fetch()
    assert (again.seq, again.deliveries) == (1, 2)


async def test_in_progress_restarts_the_ack_wait_clock(make_store: MakeStore, clock: FakeClock,
                                                       fresh: Fresh) -> None:
    """in_progress() pushes the redelivery deadline ack_wait seconds from now."""
    store = await make_store(clock=clock)
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=30.0)
    assert [m.seq for m in await consumer.fetch()] == [1]
    clock.advance(20.0)
    await consumer.in_progress(1)
    clock.advance(20.0)
    assert await consumer.fetch() == []
    clock.advance(10.0)
    assert [m.seq for m in await consumer.fetch()] == [1]


async def test_terminated_message_is_never_redelivered(make_store: MakeStore, clock: FakeClock,
                                                       fresh: Fresh) -> None:
    """term() settles a message without processing: it is not delivered again."""
    store = await make_store(clock=clock)
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=5.0)
    assert [m.seq for m in await consumer.fetch()] == [1]
    await consumer.term(1)
    clock.advance(60.0)
    assert await consumer.fetch() == []
    assert (await consumer.info()).ack_floor == 1


async def test_max_deliver_moves_message_to_dead_letter(store: Store, fresh: Fresh) -> None:
    """After max_deliver failed deliveries a message goes to the dead-letter subject."""
    log = await store.log(fresh("orders"))
    await log.append("orders.eu", b"poison", headers={"trace": "t1"})
    consumer = await log.consumer(fresh("c"), filter="orders.>", max_deliver=2,
                                  dead_letter="dead.orders")
    for attempt in (1, 2):
        [message] = await consumer.fetch()
        assert message.deliveries == attempt
        await consumer.nak(message.seq)
    assert await consumer.fetch() == []
    [dead] = await log.read(subject="dead.orders")
    assert dead.data == b"poison"
    assert dead.headers == {"trace": "t1", "reason": "max_deliver", "deliveries": "2",
                            "original-seq": "1", "original-subject": "orders.eu"}
    info = await consumer.info()
    assert (info.dead_lettered, info.ack_pending, info.ack_floor) == (1, 0, 1)


async def test_max_deliver_without_dead_letter_drops_and_counts(store: Store,
                                                                fresh: Fresh) -> None:
    """With no dead_letter subject an exhausted message is dropped and counted."""
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), max_deliver=1)
    [message] = await consumer.fetch()
    await consumer.nak(message.seq)
    assert await consumer.fetch() == []
    assert (await consumer.info()).dead_lettered == 1
    assert await log.last_seq() == 1


async def test_redeliveries_come_before_new_messages(store: Store, fresh: Fresh) -> None:
    """A fetch hands out due redeliveries first, then new messages in sequence order."""
    log = await _log_with(store, fresh("orders"), "o.a", "o.b", "o.c", "o.d")
    consumer = await log.consumer(fresh("c"))
    assert [m.seq for m in await consumer.fetch(2)] == [1, 2]
    await consumer.nak(2)
    assert [(m.seq, m.deliveries) for m in await consumer.fetch(3)] == [(2, 2), (3, 1), (4, 1)]


async def test_fetchers_of_one_consumer_share_the_work(store: Store, fresh: Fresh) -> None:
    """Two fetchers of the same consumer never get the same message (a consumer group)."""
    log = await _log_with(store, fresh("orders"), *["orders.eu"] * 6)
    name = fresh("workers")
    one, two = await log.consumer(name), await log.consumer(name)
    got_one, got_two = await one.fetch(3), await two.fetch(10)
    assert [m.seq for m in got_one] == [1, 2, 3]
    assert [m.seq for m in got_two] == [4, 5, 6]
    assert await one.fetch(10) == []


async def test_consumer_group_spans_store_instances(make_store: MakeStore,
                                                    fresh: Fresh) -> None:
    """Fetchers on two store handles (two processes) of one file share one consumer."""
    first, second = await make_store(), await make_store()
    name, group = fresh("orders"), fresh("workers")
    log = await _log_with(first, name, *["orders.eu"] * 20)
    consumers = [await log.consumer(group), await (await second.log(name)).consumer(group)]
    seen: list[int] = []
    for turn in range(20):
        seen += [m.seq for m in await consumers[turn % 2].fetch(1)]
    assert sorted(seen) == list(range(1, 21))


async def test_consumer_position_survives_reopening(make_store: MakeStore, clock: FakeClock,
                                                    fresh: Fresh) -> None:
    """A consumer re-opened by name in a new store resumes after its last ack."""
    name, group = fresh("orders"), fresh("c")
    store = await make_store(clock=clock)
    log = await _log_with(store, name, "o.a", "o.b", "o.c")
    consumer = await log.consumer(group, ack_wait=30.0)
    assert [m.seq for m in await consumer.fetch(2)] == [1, 2]
    await consumer.ack(1)
    await store.aclose()
    reopened = await make_store(clock=clock)
    again = await (await reopened.log(name)).consumer(group, ack_wait=30.0)
    info = await again.info()
    assert (info.ack_floor, info.delivered_seq, info.ack_pending) == (1, 2, 1)
    clock.advance(30.0)
    assert [(m.seq, m.deliveries) for m in await again.fetch(5)] == [(2, 2), (3, 1)]


async def test_deliver_new_skips_existing_messages(store: Store, fresh: Fresh) -> None:
    """A consumer created with deliver="new" starts after the last stored message."""
    log = await _log_with(store, fresh("orders"), "o.a", "o.b")
    consumer = await log.consumer(fresh("c"), deliver="new")
    assert await consumer.fetch(5) == []
    await log.append("o.c", b"")
    assert [m.seq for m in await consumer.fetch(5)] == [3]


async def test_ack_of_a_never_delivered_sequence_raises_not_found(store: Store,
                                                                  fresh: Fresh) -> None:
    """Acking a sequence the consumer never handed out raises NotFound."""
    log = await _log_with(store, fresh("orders"), "orders.eu", "refunds.eu", "orders.eu")
    consumer = await log.consumer(fresh("c"), filter="orders.>")
    assert [m.seq for m in await consumer.fetch()] == [1]
    for seq in (2, 3, 99):
        with pytest.raises(NotFound):
            await consumer.ack(seq)
    await consumer.ack(1)


async def test_acking_twice_is_harmless(store: Store, fresh: Fresh) -> None:
    """A second ack of a delivered message does nothing and raises nothing."""
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"))
    assert [m.seq for m in await consumer.fetch()] == [1]
    await consumer.ack(1)
    await consumer.ack(1)
    assert (await consumer.info()).ack_floor == 1


async def test_consumer_info_reports_position_and_lag(store: Store, fresh: Fresh) -> None:
    """info() gives ack floor, delivered sequence, ack pending, lag and redeliveries."""
    log = await _log_with(store, fresh("orders"), *["orders.eu"] * 5, "refunds.eu")
    consumer = await log.consumer(fresh("c"), filter="orders.>")
    before = await consumer.info()
    assert (before.ack_floor, before.delivered_seq, before.num_pending) == (0, 0, 5)
    assert [m.seq for m in await consumer.fetch(3)] == [1, 2, 3]
    await consumer.ack(1)
    await consumer.ack(3)
    await consumer.nak(2)
    assert [m.seq for m in await consumer.fetch()] == [2]
    info = await consumer.info()
    assert (info.name, info.filter) == (consumer.name, "orders.>")
    assert (info.ack_floor, info.delivered_seq, info.ack_pending) == (1, 3, 1)
    assert (info.num_pending, info.redelivered, info.dead_lettered) == (2, 1, 0)


async def test_fetch_with_timeout_wakes_on_a_concurrent_append(store: Store,
                                                               fresh: Fresh) -> None:
    """A waiting fetch returns as soon as a matching message is appended."""
    log = await store.log(fresh("orders"))
    consumer = await log.consumer(fresh("c"))
    waiting = asyncio.create_task(consumer.fetch(timeout=10.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await log.append("orders.eu", b"late")
    [message] = await asyncio.wait_for(waiting, 1.0)
    assert message.data == b"late"


async def test_fetch_with_timeout_returns_empty_when_nothing_comes(store: Store,
                                                                   fresh: Fresh) -> None:
    """A fetch that times out returns an empty list, not an error."""
    log = await _log_with(store, fresh("orders"), "refunds.eu")
    consumer = await log.consumer(fresh("c"), filter="orders.>")
    assert await consumer.fetch(timeout=0.1) == []
    assert (await consumer.info()).num_pending == 0


async def test_waiting_fetch_wakes_when_a_nak_delay_ends(store: Store, fresh: Fresh) -> None:
    """A waiting fetch picks up a nacked message when its delay ends, with no other write."""
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=60.0)
    assert [m.seq for m in await consumer.fetch()] == [1]
    await consumer.nak(1, delay=0.2)
    [again] = await asyncio.wait_for(consumer.fetch(timeout=5.0), 1.0)
    assert (again.seq, again.deliveries) == (1, 2)


async def test_waiting_fetch_wakes_when_ack_wait_expires(store: Store, fresh: Fresh) -> None:
    """A waiting fetch picks up an unacknowledged message when its ack_wait ends."""
    log = await _log_with(store, fresh("orders"), "orders.eu")
    consumer = await log.consumer(fresh("c"), ack_wait=0.2)
    assert [m.seq for m in await consumer.fetch()] == [1]
    [again] = await asyncio.wait_for(consumer.fetch(timeout=5.0), 1.0)
    assert again.deliveries == 2


async def test_waiting_fetch_sees_appends_from_another_store(make_store: MakeStore,
                                                             fresh: Fresh) -> None:
    """A fetch waiting in one process notices an append made by another process."""
    first, second = await make_store(), await make_store()
    name = fresh("orders")
    consumer = await (await first.log(name)).consumer(fresh("c"))
    waiting = asyncio.create_task(consumer.fetch(timeout=10.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await (await second.log(name)).append("orders.eu", b"remote")
    [message] = await asyncio.wait_for(waiting, 1.0)
    assert message.data == b"remote"


async def test_consumers_lists_and_delete_forgets(store: Store, fresh: Fresh) -> None:
    """consumers() lists a log's consumers; delete_consumer() removes one and its position."""
    log = await _log_with(store, fresh("orders"), "orders.eu")
    name = fresh("c")
    consumer = await log.consumer(name)
    assert [m.seq for m in await consumer.fetch()] == [1]
    assert [info.name for info in await log.consumers()] == [name]
    await log.delete_consumer(name)
    assert await log.consumers() == []
    with pytest.raises(NotFound):
        await consumer.fetch()
    with pytest.raises(NotFound):
        await log.delete_consumer(name)
    recreated = await log.consumer(name)
    assert [m.seq for m in await recreated.fetch()] == [1]


async def test_reopening_a_consumer_updates_settings_and_keeps_position(store: Store,
                                                                        fresh: Fresh) -> None:
    """Opening an existing consumer with new settings keeps its position."""
    log = await _log_with(store, fresh("orders"), "orders.eu", "orders.eu")
    name = fresh("c")
    consumer = await log.consumer(name, filter="orders.>")
    assert [m.seq for m in await consumer.fetch()] == [1]
    await consumer.ack(1)
    reopened = await log.consumer(name, filter="orders.*", deliver="new")
    info = await reopened.info()
    assert (info.filter, info.ack_floor) == ("orders.*", 1)
    assert [m.seq for m in await reopened.fetch()] == [2]


@pytest.mark.parametrize("settings", [{"ack_wait": 0}, {"max_deliver": 0},
                                      {"dead_letter": "dead.*"}, {"deliver": "last"}])
async def test_invalid_consumer_settings_are_refused(store: Store, fresh: Fresh,
                                                     settings: dict[str, object]) -> None:
    """A consumer with a non-positive ack_wait or max_deliver, or bad options, is refused."""
    log = await store.log(fresh("orders"))
    with pytest.raises(StoreError):
        await log.consumer(fresh("c"), **settings)  # type: ignore[arg-type]
    assert await log.consumers() == []


async def test_reclaim_makes_what_a_dead_fetcher_held_deliverable_now(
        make_store: MakeStore, fresh: Fresh) -> None:
    """A process fetched and died (its acks never come): reclaim() from another store puts its
    unsettled messages back at once, not after the ack-wait; settled ones stay settled."""
    dead = await make_store()
    name, consumer_name = fresh("orders"), fresh("c")
    log = await _log_with(dead, name, "orders.eu", "orders.eu", "orders.eu")
    held = await log.consumer(consumer_name, ack_wait=60.0)
    assert [m.seq for m in await held.fetch(3)] == [1, 2, 3]
    await held.ack(2)
    alive = await make_store()
    consumer = await (await alive.log(name)).consumer(consumer_name, ack_wait=60.0)
    assert await consumer.fetch() == []  # still held out by the dead fetcher's ack-wait
    await consumer.reclaim()
    again = await consumer.fetch(3, timeout=2.0)
    assert [(m.seq, m.deliveries) for m in again] == [(1, 2), (3, 2)]
    await consumer.reclaim()  # nothing pending elsewhere: harmless


async def test_open_consumer_keeps_the_stored_settings(make_store: MakeStore,
                                                       fresh: Fresh) -> None:
    """open_consumer() opens what another process created, with its filter and position (no
    settings restated); a consumer that does not exist is NotFound, not created."""
    first = await make_store()
    name, consumer_name = fresh("orders"), fresh("c")
    log = await _log_with(first, name, "orders.eu", "orders.us", "orders.eu")
    created = await log.consumer(consumer_name, filter="orders.eu", ack_wait=60.0)
    assert [m.seq for m in await created.fetch()] == [1]
    await created.ack(1)
    other = await (await make_store()).log(name)
    opened = await other.open_consumer(consumer_name)
    assert [m.seq for m in await opened.fetch(5, timeout=1.0)] == [3]  # filter and position
    with pytest.raises(NotFound):
        await other.open_consumer(fresh("absent"))
    assert [c.name for c in await other.consumers()] == [consumer_name]
