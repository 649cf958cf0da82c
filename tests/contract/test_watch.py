"""KV watch: live changes in revision order, replay after a revision, prefixes, processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from interlink.errors import StoreClosed
from interlink.store import KVEntry, Store

from .conftest import Fresh, MakeStore, closing_watch


async def _take(watch: AsyncIterator[KVEntry], count: int,
                timeout: float = 2.0) -> list[KVEntry]:
    """The next `count` changes of a watch, failing the test if they do not come in time."""
    async def collect() -> list[KVEntry]:
        return [await anext(watch) for _ in range(count)]
    return await asyncio.wait_for(collect(), timeout)


async def _nothing_more(watch: AsyncIterator[KVEntry]) -> bool:
    """Whether the watch stays quiet for a moment."""
    try:
        await asyncio.wait_for(anext(watch), 0.1)
    except TimeoutError:
        return True
    return False


async def test_live_watch_sees_puts_and_deletes_in_order(store: Store, fresh: Fresh) -> None:
    """A watch yields every later put and delete, in revision order."""
    kv = await store.kv(fresh("kv"))
    await kv.put("before", b"old")
    async with closing_watch(kv.watch()) as watch:
        revisions = [await kv.put("a", b"1"), await kv.put("b", b"2"), await kv.delete("a")]
        changes = await _take(watch, 3)
        assert [(c.key, c.op, c.value, c.revision) for c in changes] == [
            ("a", "put", b"1", revisions[0]), ("b", "put", b"2", revisions[1]),
            ("a", "del", None, revisions[2])]
        assert await _nothing_more(watch)


async def test_watch_wakes_on_a_later_write(store: Store, fresh: Fresh) -> None:
    """A watch waiting for a change is woken by the next write."""
    kv = await store.kv(fresh("kv"))
    async with closing_watch(kv.watch()) as watch:
        pending = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.01)
        assert not pending.done()
        revision = await kv.put("k", b"v")
        change = await asyncio.wait_for(pending, 1.0)
        assert (change.key, change.revision) == ("k", revision)


async def test_replay_after_revision_then_live_without_gaps(store: Store, fresh: Fresh) -> None:
    """With after_revision, retained later changes come first, then live ones, each once."""
    kv = await store.kv(fresh("kv"))
    revisions = [await kv.put(f"k{i}", b"v") for i in range(5)]
    async with closing_watch(kv.watch(after_revision=revisions[1])) as watch:
        replayed = await _take(watch, 3)
        live = [await kv.put("k9", b"v"), await kv.delete("k0")]
        rest = await _take(watch, 2)
        seen = [c.revision for c in replayed + rest]
        assert seen == revisions[2:] + live
        assert await _nothing_more(watch)


async def test_watch_filters_by_key_prefix(store: Store, fresh: Fresh) -> None:
    """A watch with a prefix yields only changes to keys starting with it."""
    kv = await store.kv(fresh("kv"))
    async with closing_watch(kv.watch("presence/")) as watch:
        await kv.put("cards/alice", b"c")
        await kv.put("presence/alice", b"p")
        await kv.put("presence_x", b"x")
        await kv.delete("presence/alice")
        changes = await _take(watch, 2)
        assert [(c.key, c.op) for c in changes] == [
            ("presence/alice", "put"), ("presence/alice", "del")]
        assert await _nothing_more(watch)


async def test_watch_counts_live_changes_from_the_call(store: Store, fresh: Fresh) -> None:
    """A live watch sees writes made after watch() was called, before it was first awaited."""
    kv = await store.kv(fresh("kv"))
    await kv.put("k", b"before")
    async with closing_watch(kv.watch()) as watch:
        revision = await kv.put("k", b"after")
        [change] = await _take(watch, 1)
        assert (change.value, change.revision) == (b"after", revision)


async def test_watch_on_another_store_sees_writes(make_store: MakeStore, fresh: Fresh) -> None:
    """A watch in one process sees writes made by another process within a second."""
    first, second = await make_store(), await make_store()
    name = fresh("kv")
    writer, reader = await first.kv(name), await second.kv(name)
    async with closing_watch(reader.watch()) as watch:
        pending = asyncio.ensure_future(_take(watch, 2, timeout=1.0))
        await asyncio.sleep(0.01)
        revisions = [await writer.put("a", b"1"), await writer.delete("a")]
        changes = await pending
        assert [(c.key, c.op, c.revision) for c in changes] == [
            ("a", "put", revisions[0]), ("a", "del", revisions[1])]


async def test_expired_ttl_shows_as_a_delete(store: Store, fresh: Fresh) -> None:
    """When a key's time-to-live passes, watchers see a `del` change without any write."""
    kv = await store.kv(fresh("kv"))
    async with closing_watch(kv.watch("presence/")) as watch:
        await kv.put("presence/alice", b"here", ttl=0.2)
        put, gone = await _take(watch, 2)
        assert (put.op, put.expires) == ("put", put.ts + 0.2)
        assert (gone.key, gone.op, gone.value) == ("presence/alice", "del", None)
        assert await kv.get("presence/alice") is None


async def test_closing_a_watch_leaves_the_bucket_usable(store: Store, fresh: Fresh) -> None:
    """A closed watch yields nothing more, and the bucket and other watches go on."""
    kv = await store.kv(fresh("kv"))
    closed, other = kv.watch(), kv.watch()
    assert isinstance(closed, AsyncGenerator)
    await kv.put("a", b"1")
    assert [c.key for c in await _take(closed, 1)] == ["a"]
    await closed.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(closed)
    await kv.put("b", b"2")
    async with closing_watch(other) as watch:
        assert [c.key for c in await _take(watch, 2)] == ["a", "b"]


async def test_closing_the_store_releases_a_waiting_watch(make_store: MakeStore,
                                                          fresh: Fresh) -> None:
    """A watch waiting for changes raises StoreClosed when its store is closed."""
    store = await make_store()
    kv = await store.kv(fresh("kv"))
    async with closing_watch(kv.watch()) as watch:
        pending = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.01)
        assert not pending.done()
        await store.aclose()
        with pytest.raises(StoreClosed):
            await asyncio.wait_for(pending, 1.0)


async def test_revision_is_where_a_resumed_watch_starts(store: Store, fresh: Fresh) -> None:
    """revision() is 0 before any write, then the latest; a watch after it sees only later
    changes (deletes count: they are revisions too)."""
    kv = await store.kv(fresh("kv"))
    assert await kv.revision() == 0
    await kv.put("a", b"1")
    last = await kv.delete("a")
    assert await kv.revision() == last
    mark = await kv.revision()
    later = await kv.put("b", b"2")
    async with closing_watch(kv.watch(after_revision=mark)) as watch:
        [change] = await _take(watch, 1)
        assert (change.key, change.revision) == ("b", later)
        assert await _nothing_more(watch)
