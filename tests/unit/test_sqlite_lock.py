"""A write lock held by another process must not freeze the hub's event loop: the embedded
store waits for it in short steps with the loop running in between, and fails saying why
when the lock is never released."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from interlink.errors import StoreError
from interlink.store import open_store
from interlink.store import sqlite as engine


def hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    """Another program writing to the store: it takes the write lock and keeps it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


async def longest_stall_while(work: asyncio.Future[object]) -> float:
    """The longest the loop went without running a 5 ms ticker while `work` ran."""
    longest, last = 0.0, time.monotonic()
    while not work.done():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    return longest


async def test_a_write_waits_for_a_lock_held_elsewhere_without_freezing_the_loop(
        tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with open_store(f"sqlite:///{path}") as store:
        kv = await store.kv("b")
        held = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(path, 1.0, held))
        holder.start()
        await asyncio.to_thread(held.wait)
        started = time.monotonic()
        write = asyncio.ensure_future(kv.put("k", b"v"))
        stall = await longest_stall_while(write)
        revision = await write
        waited = time.monotonic() - started
        holder.join()
    assert revision >= 1 and waited >= 0.8  # it did wait for the lock ...
    assert stall < 0.3  # ... and the loop ran meanwhile (it froze for the whole second)


async def test_a_lock_never_released_fails_the_write_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "LOCK_TIMEOUT", 0.5)
    path = tmp_path / "store.db"
    async with open_store(f"sqlite:///{path}") as store:
        kv = await store.kv("b")
        held = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(path, 1.5, held))
        holder.start()
        await asyncio.to_thread(held.wait)
        with pytest.raises(StoreError, match="stayed locked by another writer"):
            await kv.put("k", b"v")
        holder.join()
        assert await kv.put("k", b"v") >= 1  # and the store works once it is released


async def test_the_wal_is_checkpointed_off_the_commit_path_and_stays_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits never copy the WAL back (SQLite's auto-checkpoint is off on the store's
    connection); the store does it on a thread of its own while there are writes, so the
    database file takes the data — and a writer that never lets the loop run still keeps the
    WAL bounded."""
    monkeypatch.setattr(engine, "CHECKPOINT_SECONDS", 0.05)
    path = tmp_path / "store.db"
    async with open_store(f"sqlite:///{path}") as store:
        assert store._connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        kv = await store.kv("b")
        empty = path.stat().st_size
        for i in range(300):
            await kv.put(f"k{i}", b"x" * 500)
            await asyncio.sleep(0)
        for _ in range(100):  # until the checkpointer has run
            await asyncio.sleep(0.02)
            if path.stat().st_size > empty + 100_000:
                break
        assert path.stat().st_size > empty + 100_000  # the rows reached the database file
        wal = Path(f"{path}-wal")
        peak = 0
        for i in range(6000):  # never yields: the fallback in the commit path copies back
            await kv.put(f"k{i % 50}", b"y" * 200)
            if i % 250 == 0:
                peak = max(peak, wal.stat().st_size)
        assert peak < 96 * 1024 * 1024
