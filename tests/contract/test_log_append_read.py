"""Logs: append, sequence numbers, deduplication, reading with filters, seq_at, subjects."""

from __future__ import annotations

import asyncio

import pytest

from interlink.errors import StoreError
from interlink.store import KV, AppendResult, Consumer, Log, Store
from interlink.store.subjects import subject_matches, valid_filter, valid_subject

from .conftest import FakeClock, Fresh, MakeStore


async def test_engine_objects_satisfy_the_contract_protocols(store: Store, fresh: Fresh) -> None:
    """An engine's store, logs, consumers and buckets are the contract's protocols."""
    log = await store.log(fresh("log"))
    assert isinstance(store, Store)
    assert isinstance(log, Log)
    assert isinstance(await log.consumer(fresh("c")), Consumer)
    assert isinstance(await store.kv(fresh("kv")), KV)


async def test_sequences_start_at_one_and_increase(store: Store, fresh: Fresh) -> None:
    """Each append gets the next sequence of its log, starting at 1, per log."""
    orders, audit = await store.log(fresh("orders")), await store.log(fresh("audit"))
    assert await orders.last_seq() == 0
    assert [(await orders.append("o.new", b"x")).seq for _ in range(3)] == [1, 2, 3]
    assert (await audit.append("a.rec", b"y")).seq == 1
    assert await orders.last_seq() == 3


async def test_read_returns_what_was_appended(make_store: MakeStore, clock: FakeClock,
                                              fresh: Fresh) -> None:
    """A read message carries the subject, data, id, headers and append time, 0 deliveries."""
    store = await make_store(clock=clock)
    log = await store.log(fresh("orders"))
    await log.append("orders.eu", b"\x00payload", msg_id="m-1", headers={"trace": "t1"})
    [message] = await log.read()
    assert (message.seq, message.subject, message.data) == (1, "orders.eu", b"\x00payload")
    assert (message.msg_id, message.headers) == ("m-1", {"trace": "t1"})
    assert (message.ts, message.deliveries) == (clock.now, 0)


async def test_duplicate_msg_id_within_window_is_not_stored(make_store: MakeStore,
                                                            clock: FakeClock, fresh: Fresh) -> None:
    """A second append of a msg_id within the dedup window returns the original sequence."""
    store = await make_store(clock=clock)
    log = await store.log(fresh("orders"), dedup_window=60.0)
    first = await log.append("orders.eu", b"a", msg_id="m-1")
    await log.append("orders.eu", b"b")
    clock.advance(59.0)
    again = await log.append("orders.eu", b"a", msg_id="m-1")
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert await log.last_seq() == 2


async def test_msg_id_after_window_is_appended_again(make_store: MakeStore, clock: FakeClock,
                                                     fresh: Fresh) -> None:
    """Once the dedup window has passed, the same msg_id is stored as a new message."""
    store = await make_store(clock=clock)
    log = await store.log(fresh("orders"), dedup_window=60.0)
    assert (await log.append("orders.eu", b"a", msg_id="m-1")).seq == 1
    clock.advance(61.0)
    again = await log.append("orders.eu", b"a", msg_id="m-1")
    assert (again.seq, again.duplicate) == (2, False)
    assert await log.append("orders.eu", b"a", msg_id="m-1") == AppendResult(2, True)


async def test_read_from_start_seq_with_limit(store: Store, fresh: Fresh) -> None:
    """read() starts at start_seq and returns at most `limit` messages, in order."""
    log = await store.log(fresh("orders"))
    for i in range(10):
        await log.append("orders.eu", str(i).encode())
    assert [m.seq for m in await log.read(4, limit=3)] == [4, 5, 6]
    assert [m.seq for m in await log.read(9)] == [9, 10]
    assert await log.read(11) == []


async def test_read_filter_star_matches_exactly_one_token(store: Store, fresh: Fresh) -> None:
    """In a filter `*` matches exactly one token."""
    log = await store.log(fresh("orders"))
    for subject in ("orders.eu", "orders.eu.paid", "orders.us", "refunds.eu"):
        await log.append(subject, b"")
    assert [m.subject for m in await log.read(subject="orders.*")] == ["orders.eu", "orders.us"]
    assert [m.subject for m in await log.read(subject="*.eu")] == ["orders.eu", "refunds.eu"]


async def test_read_filter_gt_matches_one_or_more_tokens(store: Store, fresh: Fresh) -> None:
    """In a filter a final `>` matches one or more tokens, never zero."""
    log = await store.log(fresh("orders"))
    for subject in ("orders", "orders.eu", "orders.eu.paid", "refunds.eu"):
        await log.append(subject, b"")
    assert [m.subject for m in await log.read(subject="orders.>")] == [
        "orders.eu", "orders.eu.paid"]
    assert len(await log.read(subject=">")) == 4
    assert [m.seq for m in await log.read(subject="orders")] == [1]


async def test_seq_at_finds_first_message_at_or_after_time(make_store: MakeStore,
                                                           clock: FakeClock,
                                                           fresh: Fresh) -> None:
    """seq_at(ts) is the first sequence stored at or after ts, last_seq()+1 when none."""
    store = await make_store(clock=clock)
    log = await store.log(fresh("orders"))
    start = clock.now
    for _ in range(3):
        await log.append("orders.eu", b"")
        clock.advance(10.0)
    assert await log.seq_at(start - 1) == 1
    assert await log.seq_at(start + 10) == 2
    assert await log.seq_at(start + 15) == 3
    assert await log.seq_at(start + 21) == 4


async def test_subjects_counts_messages_per_subject(store: Store, fresh: Fresh) -> None:
    """subjects() counts the stored messages of each subject."""
    log = await store.log(fresh("orders"))
    assert await log.subjects() == {}
    for subject in ("orders.eu", "orders.us", "orders.eu"):
        await log.append(subject, b"")
    assert await log.subjects() == {"orders.eu": 2, "orders.us": 1}


@pytest.mark.parametrize("subject", ["", "orders..eu", ".orders", "orders.", "orders.*",
                                     "orders.>", "orders eu", "orders.e*u", "orders.\n"])
async def test_invalid_subjects_are_refused(store: Store, fresh: Fresh, subject: str) -> None:
    """Appending to an empty, wildcard or whitespace-holding subject raises StoreError."""
    log = await store.log(fresh("orders"))
    with pytest.raises(StoreError, match="invalid subject"):
        await log.append(subject, b"")
    assert await log.last_seq() == 0


@pytest.mark.parametrize("pattern", ["", "orders.>.eu", "orders.e*", "orders..eu", "a b"])
async def test_invalid_filters_are_refused(store: Store, fresh: Fresh, pattern: str) -> None:
    """Reading or consuming with a malformed filter raises StoreError."""
    log = await store.log(fresh("orders"))
    with pytest.raises(StoreError, match="invalid subject filter"):
        await log.read(subject=pattern)
    with pytest.raises(StoreError, match="invalid subject filter"):
        await log.consumer(fresh("c"), filter=pattern)


@pytest.mark.parametrize(("pattern", "subject", "matches"), [
    ("a.b", "a.b", True), ("a.b", "a.c", False), ("a.*", "a.b", True),
    ("a.*", "a.b.c", False), ("*.*", "a", False), ("a.>", "a.b.c", True),
    ("a.>", "a", False), (">", "a", True), ("a.*.c", "a.b.c", True), ("a.*.>", "a.b", False),
])
def test_subject_matches_follows_nats_grammar(pattern: str, subject: str,
                                              matches: bool) -> None:
    """subject_matches applies `*` to one token and `>` to the rest, like NATS."""
    assert valid_filter(pattern) and valid_subject(subject)
    assert subject_matches(pattern, subject) is matches


async def test_wait_for_wakes_on_append_and_times_out(store: Store, fresh: Fresh) -> None:
    """wait_for returns True as soon as a later message exists, False on timeout."""
    log = await store.log(fresh("orders"))
    assert await log.wait_for(0, timeout=0.05) is False
    waiter = asyncio.create_task(log.wait_for(0, timeout=5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await log.append("orders.eu", b"")
    assert await asyncio.wait_for(waiter, 1.0) is True
    assert await log.wait_for(0, timeout=0) is True


async def test_expect_last_lets_only_one_of_two_writers_extend_a_subject(
        make_store: MakeStore, fresh: Fresh) -> None:
    """Two handles (two hubs) both read the subject's last sequence and append expecting it:
    one lands, the other gets RevisionMismatch naming what is there now; other subjects of
    the log do not count. 0 means 'nothing on this subject yet'."""
    from interlink.errors import RevisionMismatch
    name = fresh("chain")
    one, two = await (await make_store()).log(name), await (await make_store()).log(name)
    assert await one.last("audit.rec") is None
    first = await one.append("audit.rec", b"r1", expect_last=0)
    await one.append("other.subject", b"x")  # does not move audit.rec's last
    with pytest.raises(RevisionMismatch) as lost:
        await two.append("audit.rec", b"r1-fork", expect_last=0)
    assert lost.value.current == first.seq
    last = await two.last("audit.rec")
    assert last is not None and (last.seq, last.data) == (first.seq, b"r1")
    second = await two.append("audit.rec", b"r2", expect_last=last.seq)
    assert second.seq == first.seq + 2
    with pytest.raises(RevisionMismatch):
        await one.append("audit.rec", b"r2-fork", expect_last=first.seq)
    assert [m.data for m in await one.read(subject="audit.rec")] == [b"r1", b"r2"]
    with pytest.raises(StoreError):
        await one.append("audit.rec", b"r", expect_last=-1)


async def test_a_duplicate_msg_id_wins_over_a_stale_expect_last(store: Store,
                                                                fresh: Fresh) -> None:
    """A retried append (same msg_id, the expectation it had the first time) is reported as
    the duplicate it is, not as a conflict."""
    log = await store.log(fresh("numbered"))
    first = await log.append("t.a", b"1", msg_id="e-1", expect_last=0)
    again = await log.append("t.a", b"1", msg_id="e-1", expect_last=0)
    assert (again.seq, again.duplicate) == (first.seq, True)


async def test_last_names_the_newest_message_of_a_subject(store: Store, fresh: Fresh) -> None:
    log = await store.log(fresh("orders"))
    await log.append("orders.eu", b"1", headers={"n": "1"})
    await log.append("orders.us", b"2")
    await log.append("orders.eu", b"3", headers={"n": "2"}, msg_id="m3")
    last = await log.last("orders.eu")
    assert last is not None and (last.seq, last.data, last.headers, last.msg_id) == (
        3, b"3", {"n": "2"}, "m3")
    assert await log.last("orders.none") is None
    with pytest.raises(StoreError):
        await log.last("orders.*")  # a filter is not a subject


async def test_max_age_removes_old_messages(store: Store, fresh: Fresh) -> None:
    """A log opened with max_age forgets what is older (real time: the engine's clock)."""
    log = await store.log(fresh("short"), dedup_window=0.2, max_age=0.5)
    await log.append("n.x", b"old")
    await asyncio.sleep(1.2)
    await log.append("n.x", b"new")
    await asyncio.sleep(0.3)  # JetStream expires on its own timer
    assert [m.data for m in await log.read()] == [b"new"]
    with pytest.raises(StoreError):
        await store.log(fresh("bad"), max_age=0)
