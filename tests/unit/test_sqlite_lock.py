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
        with pytest.raises(StoreError, match="stayed locked by another process"):
            await kv.put("k", b"v")
        holder.join()
        assert await kv.put("k", b"v") >= 1  # and the store works once it is released
