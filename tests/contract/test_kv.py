"""KV buckets: revisions, create, compare-and-swap, delete, time-to-live, listing, history."""

from __future__ import annotations

import pytest

from interlink.errors import KeyExists, RevisionMismatch, StoreError
from interlink.store import Store

from .conftest import FakeClock, Fresh, MakeStore


async def test_put_then_get_returns_value_and_revision(make_store: MakeStore, clock: FakeClock,
                                                       fresh: Fresh) -> None:
    """get() returns what put() wrote, with the revision put() returned."""
    store = await make_store(clock=clock)
    kv = await store.kv(fresh("kv"))
    revision = await kv.put("cards/alice", b"\x00card")
    entry = await kv.get("cards/alice")
    assert entry is not None
    assert (entry.key, entry.value, entry.revision) == ("cards/alice", b"\x00card", revision)
    assert (entry.op, entry.ts, entry.expires, entry.bucket) == ("put", clock.now, None, kv.name)


async def test_revisions_increase_across_the_bucket(store: Store, fresh: Fresh) -> None:
    """Every write gets a higher revision than any earlier write in the bucket."""
    kv = await store.kv(fresh("kv"))
    revisions = [await kv.put("a", b"1"), await kv.put("b", b"2"), await kv.put("a", b"3"),
                 await kv.delete("b")]
    assert revisions == sorted(set(revisions))
    other = await store.kv(fresh("kv"))
    assert await other.put("a", b"1") == 1


async def test_get_of_an_absent_key_is_none(store: Store, fresh: Fresh) -> None:
    """get() of a key never written returns None."""
    kv = await store.kv(fresh("kv"))
    assert await kv.get("nobody") is None


async def test_create_refuses_an_existing_key(store: Store, fresh: Fresh) -> None:
    """create() writes an absent key and raises KeyExists, with its revision, when it exists."""
    kv = await store.kv(fresh("kv"))
    revision = await kv.create("calls/1", b"new")
    with pytest.raises(KeyExists) as caught:
        await kv.create("calls/1", b"other")
    assert caught.value.current == revision
    entry = await kv.get("calls/1")
    assert entry is not None and entry.value == b"new"


async def test_create_succeeds_after_delete(store: Store, fresh: Fresh) -> None:
    """A deleted key counts as absent for create()."""
    kv = await store.kv(fresh("kv"))
    await kv.create("calls/1", b"first")
    assert await kv.get("calls/1") is not None
    await kv.delete("calls/1")
    revision = await kv.create("calls/1", b"second")
    entry = await kv.get("calls/1")
    assert entry is not None and (entry.value, entry.revision) == (b"second", revision)


async def test_update_with_the_current_revision_succeeds(store: Store, fresh: Fresh) -> None:
    """update(expect=current) writes and returns a new revision."""
    kv = await store.kv(fresh("kv"))
    first = await kv.put("counter", b"1")
    second = await kv.update("counter", b"2", expect=first)
    entry = await kv.get("counter")
    assert second > first
    assert entry is not None and (entry.value, entry.revision) == (b"2", second)


async def test_update_with_a_stale_revision_raises_mismatch(store: Store, fresh: Fresh) -> None:
    """update(expect=stale) raises RevisionMismatch carrying the current revision."""
    kv = await store.kv(fresh("kv"))
    first = await kv.put("counter", b"1")
    current = await kv.put("counter", b"2")
    with pytest.raises(RevisionMismatch) as caught:
        await kv.update("counter", b"3", expect=first)
    assert (caught.value.key, caught.value.expected, caught.value.current) == (
        "counter", first, current)
    entry = await kv.get("counter")
    assert entry is not None and entry.value == b"2"


async def test_update_of_an_absent_key_reports_no_current_revision(store: Store,
                                                                   fresh: Fresh) -> None:
    """update() of an absent or deleted key raises RevisionMismatch with current None."""
    kv = await store.kv(fresh("kv"))
    with pytest.raises(RevisionMismatch) as absent:
        await kv.update("counter", b"1", expect=1)
    assert absent.value.current is None
    revision = await kv.put("counter", b"1")
    await kv.delete("counter")
    with pytest.raises(RevisionMismatch) as deleted:
        await kv.update("counter", b"2", expect=revision)
    assert deleted.value.current is None


async def test_delete_writes_a_tombstone_kept_in_history(store: Store, fresh: Fresh) -> None:
    """delete() hides the key and records a `del` revision with no value."""
    kv = await store.kv(fresh("kv"))
    await kv.put("presence/alice", b"here")
    assert await kv.get("presence/alice") is not None
    revision = await kv.delete("presence/alice")
    assert await kv.get("presence/alice") is None
    tombstone = (await kv.history("presence/alice"))[-1]
    assert (tombstone.op, tombstone.value, tombstone.revision) == ("del", None, revision)


async def test_delete_with_expect_is_compare_and_swap(store: Store, fresh: Fresh) -> None:
    """delete(expect=rev) deletes only at that revision, else RevisionMismatch."""
    kv = await store.kv(fresh("kv"))
    first = await kv.put("lease", b"1")
    current = await kv.put("lease", b"2")
    with pytest.raises(RevisionMismatch) as caught:
        await kv.delete("lease", expect=first)
    assert caught.value.current == current
    assert await kv.get("lease") is not None
    await kv.delete("lease", expect=current)
    assert await kv.get("lease") is None


async def test_ttl_hides_the_entry_after_expiry(make_store: MakeStore, clock: FakeClock,
                                                fresh: Fresh) -> None:
    """An entry written with ttl is invisible once ttl seconds have passed."""
    store = await make_store(clock=clock)
    kv = await store.kv(fresh("kv"))
    await kv.put("presence/alice", b"here", ttl=30.0)
    await kv.put("presence/bob", b"here")
    entry = await kv.get("presence/alice")
    assert entry is not None and entry.expires == clock.now + 30.0
    assert await kv.keys("presence/") == ["presence/alice", "presence/bob"]
    clock.advance(30.0)
    assert await kv.get("presence/alice") is None
    assert await kv.keys("presence/") == ["presence/bob"]
    assert [e.key for e in await kv.items("presence/")] == ["presence/bob"]


async def test_create_succeeds_on_an_expired_key(make_store: MakeStore, clock: FakeClock,
                                                 fresh: Fresh) -> None:
    """An expired key counts as absent for create(), and its expiry shows in history."""
    store = await make_store(clock=clock)
    kv = await store.kv(fresh("kv"))
    await kv.create("lease", b"old", ttl=10.0)
    with pytest.raises(KeyExists):
        await kv.create("lease", b"new")
    clock.advance(10.0)
    await kv.create("lease", b"new")
    entry = await kv.get("lease")
    assert entry is not None and entry.value == b"new"
    assert [e.op for e in await kv.history("lease")] == ["put", "del", "put"]


async def test_keys_and_items_filter_by_prefix_sorted(store: Store, fresh: Fresh) -> None:
    """keys()/items() list live keys starting with the prefix, sorted by key."""
    kv = await store.kv(fresh("kv"))
    for key in ("cards/bob", "cards/alice", "presence/alice", "cards_x", "cards/carol"):
        await kv.put(key, key.encode())
    await kv.delete("cards/carol")
    assert await kv.keys("cards/") == ["cards/alice", "cards/bob"]
    assert [(e.key, e.value) for e in await kv.items("cards/")] == [
        ("cards/alice", b"cards/alice"), ("cards/bob", b"cards/bob")]
    assert await kv.keys() == ["cards/alice", "cards/bob", "cards_x", "presence/alice"]


async def test_history_is_oldest_first_and_trimmed_to_depth(store: Store, fresh: Fresh) -> None:
    """history() lists a key's revisions oldest first, keeping the bucket's depth."""
    kv = await store.kv(fresh("kv"), history=3)
    revisions = [await kv.put("k", str(i).encode()) for i in range(5)]
    await kv.put("other", b"x")
    history = await kv.history("k")
    assert [(e.revision, e.value) for e in history] == [
        (revisions[2], b"2"), (revisions[3], b"3"), (revisions[4], b"4")]
    assert len(await kv.history("other")) == 1


@pytest.mark.parametrize("key", ["", "has space", "star*", "gt>", "ü", "x" * 513, "a\nb"])
async def test_invalid_keys_are_refused(store: Store, fresh: Fresh, key: str) -> None:
    """Keys must be 1-512 letters, digits or -_.=/:@; others raise StoreError."""
    kv = await store.kv(fresh("kv"))
    with pytest.raises(StoreError, match="invalid key"):
        await kv.put(key, b"")
    with pytest.raises(StoreError, match="invalid key"):
        await kv.get(key)
    assert await kv.keys() == []


async def test_every_allowed_key_character_is_accepted(store: Store, fresh: Fresh) -> None:
    """Letters, digits and -_.=/:@ are all valid key characters, up to 512 of them."""
    kv = await store.kv(fresh("kv"))
    keys = ["Az09-_.=/:@", "k" * 512]
    for key in keys:
        await kv.put(key, b"v")
    assert await kv.keys() == sorted(keys)
