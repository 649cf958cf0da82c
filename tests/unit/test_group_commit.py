"""Group commit in the SQLite engine (`group_commit=True`, how the hub opens its store): writes
share a transaction, each a savepoint of its own, and are durable at the next `flush()`.

The contract suite already runs whole against a grouped store (`sqlite-grouped`); these tests
pin what only grouping has: how many commits, what another handle sees before and after a
flush, one failing write among others, a process that dies before its flush, and a commit
that fails."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from interlink.errors import RevisionMismatch, StoreError
from interlink.store import open_store
from interlink.store import sqlite as sqlite_engine
from interlink.store.sqlite import SqliteStore


def grouped(path: Path) -> SqliteStore:
    return SqliteStore(path, group_commit=True)


async def test_writes_made_in_one_turn_of_the_loop_share_one_commit(tmp_path: Path) -> None:
    async with grouped(tmp_path / "s.db") as store, SqliteStore(tmp_path / "s.db") as plain:
        log, kv = await store.log("calls"), await store.kv("records")
        await store.flush()
        before = store.commits
        results = await asyncio.gather(*(log.append("call.a", b"x") for _ in range(20)),
                                       *(kv.put(f"k{i}", b"v") for i in range(10)))
        await store.flush()
        assert store.commits - before == 1
        assert sorted(r.seq for r in results[:20]) == list(range(1, 21))
        # the same writes, one transaction each, without grouping
        plain_log = await plain.log("calls")
        before = plain.commits
        await asyncio.gather(*(plain_log.append("call.a", b"x") for _ in range(20)))
        assert plain.commits - before == 20


async def test_a_write_is_seen_by_another_handle_once_flushed(tmp_path: Path) -> None:
    async with grouped(tmp_path / "s.db") as store, SqliteStore(tmp_path / "s.db") as other:
        kv, their_kv = await store.kv("memory"), await other.kv("memory")
        await store.flush()
        await kv.put("plan", b"v1")
        assert store.pending
        assert await their_kv.get("plan") is None  # not durable yet: nobody else sees it
        await store.flush()
        assert not store.pending
        entry = await their_kv.get("plan")
        assert entry is not None and entry.value == b"v1"


async def test_a_batch_commits_by_itself_when_the_loop_runs(tmp_path: Path) -> None:
    async with grouped(tmp_path / "s.db") as store, SqliteStore(tmp_path / "s.db") as other:
        log = await store.log("events")
        await log.append("evt.a", b"1")
        await asyncio.sleep(0)  # one turn of the loop, no flush
        assert not store.pending
        assert await (await other.log("events")).last_seq() == 1


async def test_a_failing_write_in_a_batch_undoes_only_itself(tmp_path: Path) -> None:
    async with grouped(tmp_path / "s.db") as store, SqliteStore(tmp_path / "s.db") as other:
        kv = await store.kv("memory")
        rev = await kv.put("counter", b"0")
        await store.flush()
        outcomes = await asyncio.gather(
            kv.put("before", b"kept"),
            kv.update("counter", b"99", expect=rev + 100),  # wrong revision: refused
            kv.update("counter", b"1", expect=rev),
            kv.put("after", b"kept"),
            return_exceptions=True)
        assert isinstance(outcomes[1], RevisionMismatch)
        await store.flush()
        theirs = await other.kv("memory")
        values = {e.key: e.value for e in await theirs.items()}
        assert values == {"after": b"kept", "before": b"kept", "counter": b"1"}


_DIES_BEFORE_FLUSH = """
import asyncio, os, sys
from interlink.store.sqlite import SqliteStore

async def main(path):
    store = SqliteStore(path, group_commit=True)
    await store.open()
    kv = await store.kv("memory")
    await kv.put("flushed", b"1")
    await store.flush()
    await kv.put("not-flushed", b"1")  # returned: but the process dies before any flush
    os._exit(0)

asyncio.run(main(sys.argv[1]))
"""


async def test_what_was_flushed_survives_a_crash_and_what_was_not_is_gone(
        tmp_path: Path) -> None:
    """Why everything that leaves the hub waits for `flush`: a write that returned is not yet
    durable. A process killed right after it keeps what it flushed, and nothing else (never
    half of a write)."""
    path = tmp_path / "s.db"
    subprocess.run([sys.executable, "-c", _DIES_BEFORE_FLUSH, str(path)], check=True,
                   timeout=60)
    async with SqliteStore(path) as store:
        kv = await store.kv("memory")
        assert await kv.keys() == ["flushed"]
        assert await kv.revision() == 1


async def test_a_commit_that_fails_stops_the_store(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with grouped(tmp_path / "s.db") as store, SqliteStore(tmp_path / "s.db") as other:
        kv = await store.kv("memory")
        await store.flush()
        await kv.put("lost", b"1")
        real = sqlite_engine._patiently

        def failing(db: sqlite3.Connection, statement: str) -> None:
            if statement == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            real(db, statement)

        monkeypatch.setattr(sqlite_engine, "_patiently", failing)
        with pytest.raises(StoreError, match=r"failed to commit .*restart the hub"):
            await store.flush()
        monkeypatch.setattr(sqlite_engine, "_patiently", real)
        with pytest.raises(StoreError, match="failed to commit"):
            await kv.get("lost")  # every later operation says so too
        with pytest.raises(StoreError, match="failed to commit"):
            await kv.put("later", b"1")
        assert await (await other.kv("memory")).keys() == []


async def test_a_second_store_in_the_process_waits_for_a_batch_without_blocking(
        tmp_path: Path) -> None:
    """Two stores on one file in one event loop: while one holds a batch (until the loop next
    runs), the other's write waits asynchronously, so the batch can commit; SQLite's own
    blocking wait would stall the loop for the whole lock step, every time."""
    path = tmp_path / "s.db"
    async with grouped(path) as first, open_store(f"sqlite:///{path}", group_commit=True) as second:
        a, b = await first.kv("c"), await second.kv("c")
        await a.create("n", b"0")

        async def bump(kv: sqlite_engine.SqliteKV) -> None:
            while True:
                entry = await kv.get("n")
                assert entry is not None and entry.value is not None
                await asyncio.sleep(0)
                try:
                    await kv.update("n", str(int(entry.value) + 1).encode(),
                                    expect=entry.revision)
                    return
                except RevisionMismatch:
                    continue

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(bump(a if i % 2 else b) for i in range(40)))  # type: ignore[arg-type]
        assert loop.time() - started < 2.0  # each blocking wait would have cost 50 ms
        await first.flush()
        await second.flush()
        entry = await a.get("n")
        assert entry is not None and entry.value == b"40"
