"""The SQLite engine: the whole storage contract over one SQLite file.

    async with SqliteStore("/path/mesh.db") as store:
        log = await store.log("calls")
        kv = await store.kv("registry")

One connection per `SqliteStore`, used synchronously on the event loop thread: every operation
is a short transaction that never spans an `await`, so two stores in one process (or one store
in each of several processes) on the same file cannot deadlock. Writes use `BEGIN IMMEDIATE`;
when another process holds the write lock, a write waits for it in `LOCK_STEP` steps with the
event loop running between them (never frozen for longer than a step) and fails after
`LOCK_TIMEOUT` saying why. The WAL is copied back into the database off the commit path
(`SqliteStore._checkpoints`), never inside a commit.

Tables:

* `logs(name, dedup_window, last_seq)` and `messages(log, seq, subject, msg_id, ts, headers,
  data)`: per-log sequences; `msg_id` deduplicates within the log's window.
* `consumers(log, name, filter, ..., start_seq, cursor, delivered_seq, dead_lettered)`: a
  consumer's settings and position. `cursor` is how far the log has been scanned for matching
  messages; `start_seq` is where a `deliver="new"` consumer began.
* `pending(log, consumer, seq, deliveries, deadline)`: delivered, unacknowledged messages.
  Fetching claims expired ones (or dead-letters them) and new ones in one transaction, which is
  what lets several fetchers, in any process, share one consumer.
* `buckets(name, history, revision)` and `kv(bucket, key, revision, op, value, ts, expires)`:
  the revision counter is bucket-wide; each key keeps its last `history` revisions.
  `kv_expiry(bucket, key, expires)` lists the live keys that have a time-to-live. A key whose
  time-to-live has passed is invisible at once, and is turned into a `del` revision (so
  watchers see it go) by the next write to the bucket or by a watcher waiting on it.

Waiting (`fetch(timeout=...)`, `wait_for`, `watch`): a write through the same store wakes only
the waiters it concerns (a fetch: appends its filter matches and naks of its consumer; a
`wait_for`: appends to its log; a watch: writes under its prefix), so idle waiters cost
nothing; writes by another connection are noticed by one poller per store (`PRAGMA
data_version` every `poll_interval` seconds while someone waits), which wakes everyone. A
waiting fetch also wakes at the next ack-wait or nak deadline of its consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from interlink.errors import (
    KeyExists,
    NotFound,
    RevisionMismatch,
    StoreClaimed,
    StoreClosed,
    StoreError,
)
from interlink.store.checks import (
    as_bytes,
    check_consumer,
    check_expect_last,
    check_headers,
    check_key,
    check_name,
    check_prefix,
    check_ttl,
)
from interlink.store.contract import (
    AppendResult,
    ConsumerInfo,
    DeliverPolicy,
    KVEntry,
    LogMessage,
)
from interlink.store.subjects import check_filter, check_subject, subject_matches

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    name TEXT PRIMARY KEY,
    dedup_window REAL NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    max_age REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    log TEXT NOT NULL,
    seq INTEGER NOT NULL,
    subject TEXT NOT NULL,
    msg_id TEXT,
    ts REAL NOT NULL,
    headers TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (log, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_msg_id ON messages (log, msg_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_ts ON messages (log, ts);
DROP INDEX IF EXISTS messages_by_subject;
CREATE INDEX IF NOT EXISTS messages_by_subject_seq ON messages (log, subject, seq);
CREATE TABLE IF NOT EXISTS consumers (
    log TEXT NOT NULL,
    name TEXT NOT NULL,
    filter TEXT NOT NULL,
    ack_wait REAL NOT NULL,
    max_deliver INTEGER NOT NULL,
    dead_letter TEXT,
    deliver TEXT NOT NULL,
    start_seq INTEGER NOT NULL,
    cursor INTEGER NOT NULL,
    delivered_seq INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (log, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    log TEXT NOT NULL,
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    deadline REAL NOT NULL,
    PRIMARY KEY (log, consumer, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_deadline ON pending (log, consumer, deadline);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    history INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    revision INTEGER NOT NULL,
    op TEXT NOT NULL,
    value BLOB,
    ts REAL NOT NULL,
    expires REAL,
    PRIMARY KEY (bucket, revision)
);
CREATE INDEX IF NOT EXISTS kv_by_key ON kv (bucket, key, revision);
CREATE TABLE IF NOT EXISTS kv_expiry (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry_by_time ON kv_expiry (bucket, expires);
"""

# Sorts after every character a key may hold, so [p, p + _KEY_END) is "starts with p".
_KEY_END = "\x7f"
_WATCH_BATCH = 256

_MESSAGE_COLUMNS = "seq, subject, msg_id, ts, headers, data"
_CONSUMER_COLUMNS = (
    "filter, ack_wait, max_deliver, dead_letter, start_seq, cursor, delivered_seq, dead_lettered")
_ENTRY_COLUMNS = "key, revision, op, value, ts, expires"


# -- validation -----------------------------------------------------------------------------

def _literal(pattern: str | None) -> bool:
    """Whether a filter names exactly one subject (its waiters are indexed by it)."""
    return pattern is not None and "*" not in pattern and ">" not in pattern


def _filter_sql(pattern: str) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause on `subject` for a validated filter, cheapest form first."""
    if pattern == ">":
        return "1", ()
    if "*" in pattern or ">" in pattern:
        return "subject_matches(?, subject)", (pattern,)
    return "subject = ?", (pattern,)


# -- row conversion -------------------------------------------------------------------------

def _message(row: tuple[Any, ...], deliveries: int = 0) -> LogMessage:
    seq, subject, msg_id, ts, headers, data = row
    return LogMessage(seq=seq, subject=subject, data=data, msg_id=msg_id, ts=ts,
                      headers=json.loads(headers), deliveries=deliveries)


def _entry(bucket: str, row: tuple[Any, ...]) -> KVEntry:
    key, revision, op, value, ts, expires = row
    return KVEntry(bucket=bucket, key=key, value=value, revision=revision, ts=ts, op=op,
                   expires=expires)


def _live(entry: KVEntry, now: float) -> bool:
    return entry.op == "put" and (entry.expires is None or entry.expires > now)


# -- the store ------------------------------------------------------------------------------

@dataclass(eq=False)
class _Ticket:
    event: asyncio.Event
    interests: dict[tuple[str, ...], Callable[[str], bool] | None]

    def wants(self, channel: tuple[str, ...], item: str) -> bool:
        test = self.interests.get(channel)
        return test is None or test(item)


class StoreClaim:
    """A held claim on a store (see `SqliteStore.claim`)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


log = logging.getLogger("interlink.store")

CHECKPOINT_SECONDS = 2.0
"""How often the WAL is copied back into the database while there are writes (never inside a
commit: with SQLite's auto-checkpoint there, one call in a few hundred paid for it and a
call's p99 was four times its median) ..."""
CHECKPOINT_WRITES = 200
"""... or after this many writes, whichever comes first."""
WAL_RESTART_PAGES = 4000
"""Past this many WAL pages the store's own connection finishes a checkpoint (see
`SqliteStore._checkpoints`), so the WAL starts over instead of growing."""
WAL_SIZE_LIMIT = 32 * 1024 * 1024
"""What the WAL file is trimmed back to once it starts over."""

LOCK_TIMEOUT = 5.0
"""How long a write waits for another process's write lock before it fails."""
LOCK_STEP = 0.05
"""The longest the event loop stalls at a time on a lock held by another process (SQLite's busy
timeout per try): a write waits in steps with the loop running between them
(`SqliteStore._write_lock`); a read or a commit, which WAL rarely makes wait, retries in
place."""


class _Locked(Exception):
    """Opening found the file locked by a writer; `open` tries again."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _patiently(db: sqlite3.Connection, statement: str) -> None:
    """Run a statement that another process's lock may hold up (a read's BEGIN, a COMMIT
    while a checkpoint runs): try again for up to `LOCK_TIMEOUT` (rare under WAL)."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            db.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise


def _close_after(done: asyncio.Future[Any], connection: sqlite3.Connection) -> None:
    """Close `connection` once the thread that used it is done (its error, if any, was only
    a deferred checkpoint)."""
    if not done.cancelled():
        done.exception()
    connection.close()


_BATCHES: dict[Path, int] = {}
"""Group-commit batches open in this process, by database file (at most one per store)."""


class SqliteStore:
    """The storage contract over one SQLite file (WAL mode).

    `synchronous="FULL"` makes every commit survive a power loss; the default `"NORMAL"` may
    lose the last commits on power loss (never on a process crash). `clock` stamps messages
    and entries and drives ack-wait, dedup and time-to-live (inject one in tests).
    `poll_interval` bounds how late a waiter notices a write made by another process.

    `group_commit=True` (the hub's setting) lets writes share a commit: a write runs inside
    the write transaction already open (as a savepoint, so a write that fails undoes only
    itself) and returns at once; the transaction commits when the event loop next gets
    control, or earlier at `flush()`. A write is then durable at the next `flush()`, not when
    it returns: whoever hands its result to anyone outside the process flushes first (the
    hub does it in one place per exit: a connection's frames, an HTTP response). One
    envelope's writes (call record, log append, audit records) thus cost one commit instead
    of one each. A commit that fails stops the store for good (`StoreError` from every later
    operation): writes that callers saw succeed were lost, and only a restart, which reads
    what is really stored, brings the process back in line with the file.
    """

    engine: str = "sqlite"
    shared: bool = False  # one hub per file: `claim` locks it

    def __init__(self, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                 clock: Callable[[], float] = time.time, poll_interval: float = 0.05,
                 group_commit: bool = False) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise StoreError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if not poll_interval > 0:
            raise StoreError(f"poll_interval must be positive, not {poll_interval!r}")
        self.path = Path(path)
        self._file = self.path.resolve()
        self.clock = clock
        self._synchronous = synchronous
        self._poll_interval = poll_interval
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._waiters: dict[tuple[str, ...], set[_Ticket]] = {}
        self._dirty: list[tuple[tuple[str, ...], str]] = []
        self._poller: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._unchecked_writes = 0
        self._checkpoint_due = asyncio.Event()
        self._data_version = 0
        self.group_commit = group_commit
        self._batch_open = False
        self._failed: StoreError | None = None
        self.commits = 0
        """Transactions committed (writes; a group commit counts once), for tests and the bench."""

    # -- lifecycle ----------------------------------------------------------------------------

    def claim(self, owner: str) -> StoreClaim:
        """Claim the file for one hub process before opening it: an exclusive lock on
        `<file>.lock` (released when the process ends, however it ends), holding `owner` so a
        second claimant can say who has it. Raises StoreClaimed, touching nothing, if another
        process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreClaimed(f"another hub is already running on the store {self.path} "
                               f"({holder}); stop it first, or use another --home") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        return StoreClaim(fd)

    async def open(self) -> Self:
        """Open the file (creating it and its tables if needed); opening twice is harmless."""
        if self._closed:
            raise StoreClosed(f"the store at {self.path} was closed; open a new one")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_TIMEOUT
        while self._db is None:
            try:
                self._db = self._connect()
            except _Locked as exc:  # another writer (maybe in this loop): wait, don't block
                if loop.time() >= deadline:
                    raise StoreError(f"cannot open the SQLite store at {self.path}: it stayed "
                                     f"locked by another writer for {LOCK_TIMEOUT:g}s") from exc
                await asyncio.sleep(LOCK_STEP)
        return self

    async def aclose(self) -> None:
        """Close the file and release every waiter (they raise StoreClosed); idempotent."""
        if self._closed:
            return
        try:
            self._commit_batch()
        finally:
            self._closed = True
        self._wake_all()
        if self._poller is not None:
            self._poller.cancel()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                raise StoreError(f"closing the store at {self.path} failed: {exc}") from exc

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path}: {exc}") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {int(LOCK_STEP * 1000)}")  # `open` retries
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path} cannot use WAL mode (got {mode!r}); "
                                 "put the store on a local filesystem")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            # no checkpoint inside a commit (it made a call's p99 four times its median):
            # `_checkpoints` copies the WAL back off the hot path
            db.execute("PRAGMA wal_autocheckpoint = 0")
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            db.create_function("subject_matches", 2, subject_matches, deterministic=True)
            self._migrate(db)
            self._data_version = db.execute("PRAGMA data_version").fetchone()[0]
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
                raise _Locked(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the SQLite store at {self.path}: {exc}") from exc
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer Interlink (schema {version}, "
                             f"this one knows {SCHEMA_VERSION}); upgrade Interlink")
        newest_index = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' "
                                  "AND name = 'messages_by_subject_seq'").fetchone()
        if version == SCHEMA_VERSION and newest_index is not None:
            return  # current: opening takes no write lock
        columns = {row[1] for row in db.execute("PRAGMA table_info(logs)")}
        upgrade = ("ALTER TABLE logs ADD COLUMN max_age REAL;"  # schema 1 → 2
                   if columns and "max_age" not in columns else "")
        try:
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {upgrade} "
                             f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- transactions and waiting -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise StoreClosed(f"the store at {self.path} is closed; open a new one")
        if self._db is None:
            raise StoreError(f"the store at {self.path} is not open: "
                             "use `async with` or `await store.open()`")
        return self._db

    def _written(self) -> None:
        """A write committed: the WAL grew; have it copied back soon (at once after
        `CHECKPOINT_WRITES` writes)."""
        self._unchecked_writes += 1
        if self._unchecked_writes >= CHECKPOINT_WRITES:
            self._checkpoint_due.set()
        if self._unchecked_writes >= 10 * CHECKPOINT_WRITES and self._db is not None:
            # a writer that never lets the event loop run (a tight loop of writes): the
            # checkpointer cannot, so copy back here, as SQLite itself would have
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._unchecked_writes = 0
        if self._checkpointer is None or self._checkpointer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next write starts it
                self._checkpointer = asyncio.get_running_loop().create_task(
                    self._checkpoints())

    async def _checkpoints(self) -> None:
        """Copy the WAL back into the database off the hot path: every `CHECKPOINT_SECONDS`
        while there are writes, or after `CHECKPOINT_WRITES` of them, a PASSIVE checkpoint on
        a connection and a thread of its own, so neither a commit nor the event loop pays for
        it. Under constant writes such a checkpoint rarely finishes before the next frame
        lands, so the WAL could not start over; when it has grown past `WAL_RESTART_PAGES`,
        the store's own connection finishes the job between two transactions (little is left
        to copy by then) and the next write starts the WAL from the beginning."""
        aside = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        loop = asyncio.get_running_loop()
        running: asyncio.Future[Any] | None = None
        try:
            while not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._checkpoint_due.wait(), CHECKPOINT_SECONDS)
                self._checkpoint_due.clear()
                if not self._unchecked_writes or self._db is None:
                    continue
                self._unchecked_writes = 0
                try:
                    running = loop.run_in_executor(
                        None, lambda: aside.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
                    _, pages, _ = await asyncio.shield(running)
                    db = self._db
                    if pages > WAL_RESTART_PAGES and db is not None:
                        self._commit_batch()  # an open group commit would keep it from ending
                        if not db.in_transaction:
                            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # busy or locked: the next round tries again
                    log.debug("checkpoint of %s deferred: %s", self.path, exc)
        finally:
            if running is not None and not running.done():
                # cancelled (the store is closing) while the thread still checkpoints: closing
                # the connection under it could crash the process; close it when it is done
                running.add_done_callback(lambda done: _close_after(done, aside))
            else:
                aside.close()

    async def _write_lock(self) -> None:
        """Begin a write transaction (the next `_transaction(write=True)` runs in it). When
        another process holds the store's write lock, wait for it without freezing the event
        loop: each try blocks at most `LOCK_STEP`, the loop runs between tries, and after
        `LOCK_TIMEOUT` the write fails saying why. Nothing may await between this and the
        `with self._transaction(write=True)` it prepares."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_TIMEOUT
        pause = 0.002
        while True:
            db = self._connection()
            if self._batch_open:  # another write of this store opened the batch meanwhile
                return
            try:
                if _BATCHES.get(self._file, 0):
                    # another store in this process holds a batch, until the event loop runs
                    # again: SQLite's blocking wait would only stop it from committing
                    raise sqlite3.OperationalError("database is locked (by this process)")
                db.execute("BEGIN IMMEDIATE")
                if self.group_commit:
                    self._batch_open = True
                    _BATCHES[self._file] = _BATCHES.get(self._file, 0) + 1
                    loop.call_soon(self._commit_batch)
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise StoreError(f"the SQLite store at {self.path} failed: {exc}") from exc
                if loop.time() >= deadline:
                    raise StoreError(
                        f"the SQLite store at {self.path} stayed locked by another writer for "
                        f"{LOCK_TIMEOUT:g}s; is another program writing to it?") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction; sqlite3 errors become StoreError. What it marked as changed
        (`_mark`) wakes the waiters interested in it once it commits. A write runs in the
        transaction `_write_lock` began (its callers await that first); with group commit,
        everything runs inside the open batch, a write as a savepoint of its own."""
        db = self._connection()
        if self._batch_open:
            with self._in_batch(db, write=write):
                yield db
            return
        self._dirty.clear()
        try:
            if not (write and db.in_transaction):
                _patiently(db, "BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._dirty.clear()
                raise
            _patiently(db, "COMMIT")
            if write:
                self.commits += 1
                self._written()
        except sqlite3.Error as exc:
            self._dirty.clear()
            raise StoreError(f"the SQLite store at {self.path} failed: {exc}") from exc
        self._wake_dirty()

    @contextmanager
    def _in_batch(self, db: sqlite3.Connection, *, write: bool) -> Iterator[None]:
        """One operation inside the open group-commit transaction. Waiters wake as soon as the
        operation is done: what they read shares the batch, and leaves the process only after
        the batch commits (see `flush`)."""
        self._dirty.clear()
        try:
            if write:
                db.execute("SAVEPOINT op")
            try:
                yield
            except BaseException:
                if write:
                    db.execute("ROLLBACK TO op")
                    db.execute("RELEASE op")
                self._dirty.clear()
                raise
            if write:
                db.execute("RELEASE op")
        except sqlite3.Error as exc:
            self._dirty.clear()
            raise StoreError(f"the SQLite store at {self.path} failed: {exc}") from exc
        self._wake_dirty()

    def _commit_batch(self) -> None:
        """Commit the open group-commit transaction, if any. A failure here loses writes that
        already returned, so the store stops: every later operation raises."""
        if not self._batch_open:
            return
        self._batch_open = False
        _BATCHES[self._file] -= 1
        db = self._db
        if db is None:
            return
        try:
            _patiently(db, "COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._failed = StoreError(
                f"the SQLite store at {self.path} failed to commit ({exc}); writes this process "
                "reported done were lost, so it stops using the store: restart the hub")
            log.error("%s", self._failed)
            self._wake_all()
            raise self._failed from exc
        self.commits += 1
        self._written()

    def health(self) -> str | None:
        """What stopped the store (a failed group commit), or None."""
        return str(self._failed) if self._failed is not None else None

    async def flush(self) -> None:
        """Return once every write this store has reported done is durable (with group
        commit: commit the open batch now; otherwise there is nothing to do). Raises only if
        the store has failed; after `aclose` (which committed) there is nothing to do."""
        if self._failed is not None:
            raise self._failed
        self._commit_batch()

    @property
    def pending(self) -> bool:
        """Whether writes are waiting for their group commit (nothing may leave the process
        that read them until `flush`)."""
        return self._batch_open

    # Waiting. A waiter takes a ticket naming what it waits for (channels such as
    # ("log", name) or ("consumer", log, name) or ("kv", bucket), each with a test of the
    # changed subject or key) *before* it checks, then waits on it: a write wakes only the
    # tickets whose channel and test it matches, so an idle consumer costs nothing when others
    # are busy. Writes by another process are noticed by one poller per store
    # (`PRAGMA data_version` every `poll_interval`), which wakes everyone.

    def _wake_dirty(self) -> None:
        """After an operation: wake whoever waits for what it changed."""
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            self._wake(dirty)

    def _mark(self, channel: tuple[str, ...], item: str) -> None:
        """Inside a write transaction: `item` (a subject, a key) of `channel` changed."""
        self._dirty.append((channel, item))

    def _wake(self, dirty: list[tuple[tuple[str, ...], str]]) -> None:
        for channel, item in dirty:
            for ticket in list(self._waiters.get(channel, ())):
                if not ticket.event.is_set() and ticket.wants(channel, item):
                    ticket.event.set()

    def _wake_all(self) -> None:
        for tickets in self._waiters.values():
            for ticket in tickets:
                ticket.event.set()

    def _ticket(self, *interests: tuple[tuple[str, ...], Callable[[str], bool] | None]
                ) -> _Ticket:
        """Register interest before checking; `_release` it after (`_wait` does)."""
        ticket = _Ticket(asyncio.Event(), dict(interests))
        for channel in ticket.interests:
            self._waiters.setdefault(channel, set()).add(ticket)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())
        return ticket

    def _release(self, ticket: _Ticket) -> None:
        for channel in ticket.interests:
            waiting = self._waiters.get(channel)
            if waiting is not None:
                waiting.discard(ticket)
                if not waiting:
                    del self._waiters[channel]

    async def _poll_loop(self) -> None:
        """Notice commits by other processes while anyone waits."""
        while not self._closed and self._waiters:
            await asyncio.sleep(self._poll_interval)
            try:
                version = self._connection().execute("PRAGMA data_version").fetchone()[0]
            except (sqlite3.Error, StoreError):
                return
            if version != self._data_version:
                self._data_version = version
                self._wake_all()

    async def _wait(self, ticket: _Ticket, timeout: float | None) -> None:
        """Until the ticket is woken or `timeout` seconds pass (None: no limit); releases it."""
        try:
            if timeout is None:
                await ticket.event.wait()
            elif timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await ticket.event.wait()
        finally:
            self._release(ticket)
        self._connection()

    # -- the contract ---------------------------------------------------------------------------

    async def log(self, name: str, *, dedup_window: float = 120.0,
                  max_age: float | None = None) -> SqliteLog:
        """Open (creating if needed) the log `name`; its settings are stored for all users."""
        check_name("log", name)
        if not dedup_window >= 0:
            raise StoreError(f"dedup_window must be >= 0 seconds, not {dedup_window!r}")
        if max_age is not None and not max_age > 0:
            raise StoreError(f"max_age must be > 0 seconds or None, not {max_age!r}")
        with self._transaction(write=False) as db:  # a reader opening it writes nothing
            row = db.execute("SELECT dedup_window, max_age FROM logs WHERE name = ?",
                             (name,)).fetchone()
        if row is not None and tuple(row) == (dedup_window, max_age):
            return SqliteLog(self, name)
        await self._write_lock()
        with self._transaction(write=True) as db:
            db.execute("INSERT INTO logs (name, dedup_window, max_age) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET dedup_window = excluded.dedup_window, "
                       "max_age = excluded.max_age", (name, dedup_window, max_age))
        return SqliteLog(self, name)

    async def kv(self, name: str, *, history: int = 64) -> SqliteKV:
        """Open (creating if needed) the bucket `name`; `history` is stored for all users."""
        check_name("bucket", name)
        if not (isinstance(history, int) and history >= 1):
            raise StoreError(f"history must be a positive integer, not {history!r}")
        with self._transaction(write=False) as db:  # a reader opening it writes nothing
            row = db.execute("SELECT history FROM buckets WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] == history:
            return SqliteKV(self, name)
        await self._write_lock()
        with self._transaction(write=True) as db:
            db.execute("INSERT INTO buckets (name, history) VALUES (?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET history = excluded.history "
                       "WHERE history != excluded.history", (name, history))
        return SqliteKV(self, name)


# -- logs -----------------------------------------------------------------------------------

def _last_seq(db: sqlite3.Connection, log: str) -> int:
    row = db.execute("SELECT last_seq FROM logs WHERE name = ?", (log,)).fetchone()
    if row is None:
        raise NotFound(f"log {log!r} does not exist; open it with store.log({log!r})")
    return int(row[0])


def _append(db: sqlite3.Connection, log: str, subject: str, data: bytes, msg_id: str | None,
            headers: dict[str, str], now: float,
            expect_last: int | None = None) -> AppendResult:
    """Append inside an open write transaction (deduplicating by `msg_id`, then checking
    `expect_last`, then trimming what is past the log's `max_age`)."""
    row = db.execute("SELECT dedup_window, max_age FROM logs WHERE name = ?", (log,)).fetchone()
    if row is None:
        raise NotFound(f"log {log!r} does not exist; open it with store.log({log!r})")
    if msg_id is not None:
        seen = db.execute("SELECT seq, ts FROM messages WHERE log = ? AND msg_id = ? "
                          "ORDER BY seq DESC LIMIT 1", (log, msg_id)).fetchone()
        if seen is not None and now - seen[1] < row[0]:
            return AppendResult(seq=seen[0], duplicate=True)
    if expect_last is not None:
        last = db.execute("SELECT MAX(seq) FROM messages WHERE log = ? AND subject = ?",
                          (log, subject)).fetchone()[0] or 0
        if last != expect_last:
            raise RevisionMismatch(subject, expect_last, last)
    if row[1] is not None:  # retention: what is older goes, with any delivery of it
        cut = db.execute("SELECT MAX(seq) FROM messages WHERE log = ? AND ts < ?",
                         (log, now - row[1])).fetchone()[0]
        if cut is not None:
            db.execute("DELETE FROM messages WHERE log = ? AND seq <= ?", (log, cut))
            db.execute("DELETE FROM pending WHERE log = ? AND seq <= ?", (log, cut))
    seq = db.execute("UPDATE logs SET last_seq = last_seq + 1 WHERE name = ? RETURNING last_seq",
                     (log,)).fetchone()[0]
    db.execute("INSERT INTO messages (log, seq, subject, msg_id, ts, headers, data) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               (log, seq, subject, msg_id, now, json.dumps(headers), data))
    return AppendResult(seq=seq, duplicate=False)


class SqliteLog:
    """A log in a SqliteStore (see `interlink.store.contract.Log`)."""

    def __init__(self, store: SqliteStore, name: str) -> None:
        self._store = store
        self.name = name

    async def append(self, subject: str, data: bytes, *, msg_id: str | None = None,
                     headers: dict[str, str] | None = None,
                     expect_last: int | None = None) -> AppendResult:
        """Store a message (or find its duplicate) and return its sequence once committed."""
        check_subject(subject)
        payload = as_bytes("data", data)
        if msg_id is not None and (not isinstance(msg_id, str) or not msg_id):
            raise StoreError(f"msg_id must be a non-empty string or None, not {msg_id!r}")
        check_expect_last(expect_last)
        fields = check_headers(headers)
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            result = _append(db, self.name, subject, payload, msg_id, fields,
                             self._store.clock(), expect_last)
            if not result.duplicate:
                self._store._mark(("log", self.name), subject)
                self._store._mark(("subject", self.name, subject), subject)
            return result

    async def read(self, start_seq: int = 1, *, subject: str = ">",
                   limit: int = 100) -> list[LogMessage]:
        """Up to `limit` messages from `start_seq` on whose subject matches the filter."""
        check_filter(subject)
        if limit < 0:
            raise StoreError(f"limit must be >= 0, not {limit!r}")
        where, params = _filter_sql(subject)
        with self._store._transaction(write=False) as db:
            rows = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE log = ? "
                              f"AND seq >= ? AND {where} ORDER BY seq LIMIT ?",
                              (self.name, start_seq, *params, limit)).fetchall()
        return [_message(row) for row in rows]

    async def last(self, subject: str) -> LogMessage | None:
        """The last message on `subject`, or None."""
        check_subject(subject)
        with self._store._transaction(write=False) as db:
            row = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE log = ? AND "
                             "subject = ? ORDER BY seq DESC LIMIT 1",
                             (self.name, subject)).fetchone()
        return _message(row) if row is not None else None

    async def seq_at(self, ts: float) -> int:
        """The first sequence stored at or after `ts` (last_seq()+1 when none)."""
        with self._store._transaction(write=False) as db:
            row = db.execute("SELECT MIN(seq) FROM messages WHERE log = ? AND ts >= ?",
                             (self.name, ts)).fetchone()
            return int(row[0]) if row[0] is not None else _last_seq(db, self.name) + 1

    async def last_seq(self) -> int:
        """The highest sequence stored (0 for an empty log)."""
        return self._last_seq()

    def _last_seq(self) -> int:
        with self._store._transaction(write=False) as db:
            return _last_seq(db, self.name)

    async def wait_for(self, after_seq: int, *, timeout: float) -> bool:
        """Wait until a message with sequence > after_seq exists; False on timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            ticket = self._store._ticket((("log", self.name), None))
            try:
                if self._last_seq() > after_seq:
                    return True
                remaining = end - loop.time()
                if remaining <= 0:
                    return False
                await self._store._wait(ticket, remaining)
            finally:
                self._store._release(ticket)

    async def consumer(self, name: str, *, filter: str = ">", ack_wait: float = 30.0,
                       max_deliver: int = -1, dead_letter: str | None = None,
                       deliver: DeliverPolicy = "all") -> SqliteConsumer:
        """Create the durable consumer `name`, or open it with these settings and its position."""
        check_consumer(name, filter, ack_wait, max_deliver, dead_letter, deliver)
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            start = _last_seq(db, self.name) if deliver == "new" else 0
            db.execute(
                "INSERT INTO consumers (log, name, filter, ack_wait, max_deliver, dead_letter, "
                "deliver, start_seq, cursor, delivered_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (log, name) DO UPDATE SET filter = excluded.filter, "
                "ack_wait = excluded.ack_wait, max_deliver = excluded.max_deliver, "
                "dead_letter = excluded.dead_letter, deliver = excluded.deliver "
                "WHERE (filter, ack_wait, max_deliver, dead_letter, deliver) IS NOT "
                "(excluded.filter, excluded.ack_wait, excluded.max_deliver, "
                "excluded.dead_letter, excluded.deliver)",
                (self.name, name, filter, ack_wait, max_deliver, dead_letter, deliver,
                 start, start, start))
        return SqliteConsumer(self._store, self.name, name, filter)

    async def open_consumer(self, name: str) -> SqliteConsumer:
        """The existing consumer `name`, with its stored settings; NotFound if there is none."""
        with self._store._transaction(write=False) as db:
            row = db.execute("SELECT filter FROM consumers WHERE log = ? AND name = ?",
                             (self.name, name)).fetchone()
        if row is None:
            raise NotFound(f"log {self.name!r} has no consumer {name!r}")
        return SqliteConsumer(self._store, self.name, name, row[0])

    async def consumers(self) -> list[ConsumerInfo]:
        """Every durable consumer of this log, by name."""
        with self._store._transaction(write=False) as db:
            rows = db.execute(f"SELECT name, {_CONSUMER_COLUMNS} FROM consumers WHERE log = ? "
                              "ORDER BY name", (self.name,)).fetchall()
            return [_consumer_info(db, self.name, row[0], _ConsumerState(*row[1:]))
                    for row in rows]

    async def delete_consumer(self, name: str) -> None:
        """Forget the consumer `name` and its position; NotFound if there is none."""
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            gone = db.execute("DELETE FROM consumers WHERE log = ? AND name = ?",
                              (self.name, name)).rowcount
            if not gone:
                raise NotFound(f"log {self.name!r} has no consumer {name!r}")
            db.execute("DELETE FROM pending WHERE log = ? AND consumer = ?", (self.name, name))

    async def subjects(self) -> dict[str, int]:
        """Message counts per subject."""
        with self._store._transaction(write=False) as db:
            rows = db.execute("SELECT subject, COUNT(*) FROM messages WHERE log = ? "
                              "GROUP BY subject ORDER BY subject", (self.name,)).fetchall()
        return {subject: count for subject, count in rows}


# -- consumers ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _ConsumerState:
    """A consumer's stored row (columns in `_CONSUMER_COLUMNS` order)."""

    filter: str
    ack_wait: float
    max_deliver: int
    dead_letter: str | None
    start_seq: int
    cursor: int
    delivered_seq: int
    dead_lettered: int


def _consumer_info(db: sqlite3.Connection, log: str, name: str,
                   state: _ConsumerState) -> ConsumerInfo:
    ack_pending, lowest, redelivered = db.execute(
        "SELECT COUNT(*), MIN(seq), SUM(deliveries > 1) FROM pending "
        "WHERE log = ? AND consumer = ?", (log, name)).fetchone()
    where, params = _filter_sql(state.filter)
    num_pending = db.execute(f"SELECT COUNT(*) FROM messages WHERE log = ? AND seq > ? "
                             f"AND {where}", (log, state.cursor, *params)).fetchone()[0]
    return ConsumerInfo(
        name=name, filter=state.filter,
        ack_floor=state.delivered_seq if lowest is None else lowest - 1,
        delivered_seq=state.delivered_seq, ack_pending=ack_pending, num_pending=num_pending,
        redelivered=redelivered or 0, dead_lettered=state.dead_lettered)


class SqliteConsumer:
    """A durable consumer in a SqliteStore (see `interlink.store.contract.Consumer`)."""

    def __init__(self, store: SqliteStore, log: str, name: str,
                 filter: str | None = None) -> None:
        self._store = store
        self._log = log
        self.name = name
        self._filter = filter

    async def fetch(self, batch: int = 1, *, timeout: float = 0.0) -> list[LogMessage]:
        """Up to `batch` messages (redeliveries first); waits up to `timeout` for the first."""
        if not (isinstance(batch, int) and batch >= 1):
            raise StoreError(f"batch must be a positive integer, not {batch!r}")
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            appends: tuple[tuple[str, ...], Callable[[str], bool] | None] = (
                (("subject", self._log, self._filter), None)
                if self._filter is not None and _literal(self._filter)
                else (("log", self._log), self._wants))
            ticket = self._store._ticket(appends, (("consumer", self._log, self.name), None))
            try:
                await self._store._write_lock()
                messages, next_deadline = self._claim(batch)
                remaining = end - loop.time()
                if messages or remaining <= 0:
                    return messages
                if next_deadline is not None:
                    remaining = min(remaining, max(0.0, next_deadline - self._store.clock()))
                await self._store._wait(ticket, remaining)
            finally:
                self._store._release(ticket)

    def _wants(self, subject: str) -> bool:
        """Whether a message appended under `subject` is for this consumer (its filter as of
        its last claim)."""
        return self._filter is None or subject_matches(self._filter, subject)

    async def ack(self, seq: int) -> None:
        """Done with `seq`; harmless if already settled; NotFound if never delivered."""
        await self._store._write_lock()
        self._settle(seq)

    async def term(self, seq: int) -> None:
        """Never deliver `seq` again; harmless if already settled; NotFound if never delivered."""
        await self._store._write_lock()
        self._settle(seq)

    async def nak(self, seq: int, *, delay: float = 0.0) -> None:
        """Make `seq` deliverable again after `delay` seconds (no-op if already settled)."""
        if not delay >= 0:
            raise StoreError(f"delay must be >= 0 seconds, not {delay!r}")
        await self._store._write_lock()
        self._set_deadline(seq, lambda state, now: now + delay)

    async def in_progress(self, seq: int) -> None:
        """Restart the ack-wait clock of `seq` (no-op if already settled)."""
        await self._store._write_lock()
        self._set_deadline(seq, lambda state, now: now + state.ack_wait)

    async def reclaim(self) -> None:
        """Every unsettled delivery deliverable again now (its ack-wait ended)."""
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            self._state(db)
            moved = db.execute("UPDATE pending SET deadline = ? WHERE log = ? AND consumer = ?",
                               (self._store.clock(), self._log, self.name)).rowcount
            if moved:
                self._store._mark(("consumer", self._log, self.name), "*")

    async def info(self) -> ConsumerInfo:
        """A snapshot of the consumer's state."""
        with self._store._transaction(write=False) as db:
            return _consumer_info(db, self._log, self.name, self._state(db))

    # -- internals ------------------------------------------------------------------------------

    def _state(self, db: sqlite3.Connection) -> _ConsumerState:
        row = db.execute(f"SELECT {_CONSUMER_COLUMNS} FROM consumers WHERE log = ? AND name = ?",
                         (self._log, self.name)).fetchone()
        if row is None:
            raise NotFound(f"log {self._log!r} has no consumer {self.name!r} (was it deleted?)")
        return _ConsumerState(*row)

    def _claim(self, batch: int) -> tuple[list[LogMessage], float | None]:
        """Claim up to `batch` messages; also return the earliest pending deadline."""
        with self._store._transaction(write=True) as db:
            state = self._state(db)
            self._filter = state.filter
            now = self._store.clock()
            messages = self._claim_expired(db, state, now, batch)
            if len(messages) < batch:
                messages += self._claim_new(db, state, now, batch - len(messages))
            next_deadline = db.execute("SELECT MIN(deadline) FROM pending "
                                       "WHERE log = ? AND consumer = ?",
                                       (self._log, self.name)).fetchone()[0]
        return messages, next_deadline

    def _claim_expired(self, db: sqlite3.Connection, state: _ConsumerState, now: float,
                       batch: int) -> list[LogMessage]:
        """Redeliver expired pending messages, dead-lettering those out of attempts."""
        rows = db.execute(
            "SELECT p.deliveries, m.seq, m.subject, m.msg_id, m.ts, m.headers, m.data "
            "FROM pending AS p JOIN messages AS m ON m.log = p.log AND m.seq = p.seq "
            "WHERE p.log = ? AND p.consumer = ? AND p.deadline <= ? ORDER BY p.seq",
            (self._log, self.name, now)).fetchall()
        claimed: list[LogMessage] = []
        for deliveries, *fields in rows:
            message = _message(tuple(fields), deliveries)
            if 0 < state.max_deliver <= deliveries:
                self._dead_letter(db, state, message, now)
            elif len(claimed) < batch:
                db.execute("UPDATE pending SET deliveries = ?, deadline = ? "
                           "WHERE log = ? AND consumer = ? AND seq = ?",
                           (deliveries + 1, now + state.ack_wait, self._log, self.name,
                            message.seq))
                claimed.append(replace(message, deliveries=deliveries + 1))
        return claimed

    def _dead_letter(self, db: sqlite3.Connection, state: _ConsumerState, message: LogMessage,
                     now: float) -> None:
        db.execute("DELETE FROM pending WHERE log = ? AND consumer = ? AND seq = ?",
                   (self._log, self.name, message.seq))
        db.execute("UPDATE consumers SET dead_lettered = dead_lettered + 1 "
                   "WHERE log = ? AND name = ?", (self._log, self.name))
        if state.dead_letter is not None:
            headers = {**message.headers, "reason": "max_deliver",
                       "deliveries": str(message.deliveries),
                       "original-seq": str(message.seq), "original-subject": message.subject}
            _append(db, self._log, state.dead_letter, message.data, None, headers, now)
            self._store._mark(("log", self._log), state.dead_letter)
            self._store._mark(("subject", self._log, state.dead_letter), state.dead_letter)

    def _claim_new(self, db: sqlite3.Connection, state: _ConsumerState, now: float,
                   batch: int) -> list[LogMessage]:
        """Deliver matching messages after the consumer's cursor, in sequence order."""
        last = _last_seq(db, self._log)
        where, params = _filter_sql(state.filter)
        rows = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE log = ? AND seq > ? "
                          f"AND seq <= ? AND {where} ORDER BY seq LIMIT ?",
                          (self._log, state.cursor, last, *params, batch)).fetchall()
        messages = [_message(row, deliveries=1) for row in rows]
        db.executemany("INSERT INTO pending (log, consumer, seq, deliveries, deadline) "
                       "VALUES (?, ?, ?, 1, ?)",
                       [(self._log, self.name, m.seq, now + state.ack_wait) for m in messages])
        cursor = messages[-1].seq if len(messages) == batch else last
        if cursor != state.cursor:
            delivered = messages[-1].seq if messages else state.delivered_seq
            db.execute("UPDATE consumers SET cursor = ?, delivered_seq = ? "
                       "WHERE log = ? AND name = ?", (cursor, delivered, self._log, self.name))
        return messages

    def _settle(self, seq: int) -> None:
        with self._store._transaction(write=True) as db:
            state = self._state(db)
            gone = db.execute("DELETE FROM pending WHERE log = ? AND consumer = ? AND seq = ?",
                              (self._log, self.name, seq)).rowcount
            if not gone:
                self._check_delivered(db, state, seq)

    def _set_deadline(self, seq: int,
                      deadline: Callable[[_ConsumerState, float], float]) -> None:
        with self._store._transaction(write=True) as db:
            state = self._state(db)
            moved = db.execute("UPDATE pending SET deadline = ? "
                               "WHERE log = ? AND consumer = ? AND seq = ?",
                               (deadline(state, self._store.clock()), self._log, self.name,
                                seq)).rowcount
            if not moved:
                self._check_delivered(db, state, seq)
            else:
                self._store._mark(("consumer", self._log, self.name), str(seq))

    def _check_delivered(self, db: sqlite3.Connection, state: _ConsumerState, seq: int) -> None:
        """Raise NotFound unless `seq` is a message this consumer delivered (and settled)."""
        row = db.execute("SELECT subject FROM messages WHERE log = ? AND seq = ?",
                         (self._log, seq)).fetchone()
        if (row is None or not state.start_seq < seq <= state.delivered_seq
                or not subject_matches(state.filter, row[0])):
            raise NotFound(f"consumer {self.name!r} of log {self._log!r} "
                           f"never delivered sequence {seq}")


# -- key-value buckets ----------------------------------------------------------------------

class SqliteKV:
    """A key-value bucket in a SqliteStore (see `interlink.store.contract.KV`)."""

    def __init__(self, store: SqliteStore, name: str) -> None:
        self._store = store
        self.name = name

    async def get(self, key: str) -> KVEntry | None:
        """The current entry, or None when absent, deleted or expired."""
        check_key(key)
        with self._store._transaction(write=False) as db:
            return self._current(db, key, self._store.clock())

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        """Write unconditionally; returns the new revision."""
        check_key(key)
        data = as_bytes("value", value)
        check_ttl(ttl)
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            now = self._store.clock()
            self._purge_expired(db, now)
            return self._write(db, key, "put", data, ttl, now)

    async def create(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        """Write only if the key is absent, deleted or expired; else KeyExists."""
        check_key(key)
        data = as_bytes("value", value)
        check_ttl(ttl)
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            now = self._store.clock()
            self._purge_expired(db, now)
            current = self._current(db, key, now)
            if current is not None:
                raise KeyExists(key, current.revision)
            return self._write(db, key, "put", data, ttl, now)

    async def update(self, key: str, value: bytes, *, expect: int,
                     ttl: float | None = None) -> int:
        """Write only if the key's live revision is `expect`; else RevisionMismatch
        (whose `current` is None when the key is absent, deleted or expired)."""
        check_key(key)
        data = as_bytes("value", value)
        check_ttl(ttl)
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            now = self._store.clock()
            self._purge_expired(db, now)
            self._expect(db, key, expect, now)
            return self._write(db, key, "put", data, ttl, now)

    async def delete(self, key: str, *, expect: int | None = None) -> int:
        """Write a tombstone revision; with `expect`, only if the live revision is `expect`."""
        check_key(key)
        await self._store._write_lock()
        with self._store._transaction(write=True) as db:
            now = self._store.clock()
            self._purge_expired(db, now)
            if expect is not None:
                self._expect(db, key, expect, now)
            return self._write(db, key, "del", None, None, now)

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with `prefix`, sorted."""
        return [entry.key for entry in await self.items(prefix)]

    async def items(self, prefix: str = "") -> list[KVEntry]:
        """Live entries whose key starts with `prefix`, sorted by key."""
        check_prefix(prefix)
        with self._store._transaction(write=False) as db:
            rows = db.execute(
                "SELECT key, MAX(revision), op, value, ts, expires FROM kv "
                "WHERE bucket = ? AND key >= ? AND key < ? GROUP BY key ORDER BY key",
                (self.name, prefix, prefix + _KEY_END)).fetchall()
        now = self._store.clock()
        return [e for e in (_entry(self.name, row) for row in rows) if _live(e, now)]

    async def history(self, key: str) -> list[KVEntry]:
        """Retained revisions of `key` (deletes included), oldest first."""
        check_key(key)
        with self._store._transaction(write=False) as db:
            rows = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM kv WHERE bucket = ? AND key = ? "
                              "ORDER BY revision", (self.name, key)).fetchall()
        return [_entry(self.name, row) for row in rows]

    async def revision(self) -> int:
        """The bucket's latest revision (0 before the first write)."""
        with self._store._transaction(write=False) as db:
            return self._revision(db)

    def watch(self, prefix: str = "", *, after_revision: int | None = None
              ) -> AsyncGenerator[KVEntry, None]:
        """Changes to keys starting with `prefix`, in revision order, each once.

        Live changes count from this call (not from the first `__anext__`). An expired
        time-to-live shows as a `del` entry (value None) when it is purged: at the latest
        when the expiry passes while someone watches the bucket.
        """
        check_prefix(prefix)
        if after_revision is None:
            with self._store._transaction(write=False) as db:
                after_revision = self._revision(db)
        return self._changes(prefix, after_revision)

    # -- internals ------------------------------------------------------------------------------

    async def _changes(self, prefix: str, cursor: int) -> AsyncGenerator[KVEntry, None]:
        while True:
            ticket = self._store._ticket((("kv", self.name), lambda key: key.startswith(prefix)))
            try:
                entries, next_expiry = self._changes_after(prefix, cursor)
                if entries:
                    self._store._release(ticket)
                for entry in entries:
                    cursor = entry.revision
                    yield entry
                if entries:
                    continue
                now = self._store.clock()
                if next_expiry is None:
                    await self._store._wait(ticket, None)
                elif next_expiry <= now:
                    await self._store._write_lock()
                    with self._store._transaction(write=True) as db:
                        self._purge_expired(db, now)
                else:
                    await self._store._wait(ticket, next_expiry - now)
            finally:
                self._store._release(ticket)

    def _changes_after(self, prefix: str, cursor: int) -> tuple[list[KVEntry], float | None]:
        """Retained changes after `cursor` under `prefix`, and the bucket's next expiry."""
        with self._store._transaction(write=False) as db:
            rows = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM kv WHERE bucket = ? "
                              "AND revision > ? AND key >= ? AND key < ? ORDER BY revision "
                              "LIMIT ?", (self.name, cursor, prefix, prefix + _KEY_END,
                                          _WATCH_BATCH)).fetchall()
            next_expiry = db.execute("SELECT MIN(expires) FROM kv_expiry WHERE bucket = ?",
                                     (self.name,)).fetchone()[0]
        return [_entry(self.name, row) for row in rows], next_expiry

    def _revision(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT revision FROM buckets WHERE name = ?", (self.name,)).fetchone()
        if row is None:
            raise NotFound(f"bucket {self.name!r} does not exist; open it with "
                           f"store.kv({self.name!r})")
        return int(row[0])

    def _current(self, db: sqlite3.Connection, key: str, now: float) -> KVEntry | None:
        row = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM kv WHERE bucket = ? AND key = ? "
                         "ORDER BY revision DESC LIMIT 1", (self.name, key)).fetchone()
        if row is None:
            return None
        entry = _entry(self.name, row)
        return entry if _live(entry, now) else None

    def _expect(self, db: sqlite3.Connection, key: str, expect: int, now: float) -> None:
        current = self._current(db, key, now)
        if current is None or current.revision != expect:
            raise RevisionMismatch(key, expect, None if current is None else current.revision)

    def _write(self, db: sqlite3.Connection, key: str, op: Literal["put", "del"],
               value: bytes | None, ttl: float | None, now: float) -> int:
        """Add a revision of `key` (inside a write transaction) and trim its history."""
        row = db.execute("UPDATE buckets SET revision = revision + 1 WHERE name = ? "
                         "RETURNING revision, history", (self.name,)).fetchone()
        if row is None:
            raise NotFound(f"bucket {self.name!r} does not exist; open it with "
                           f"store.kv({self.name!r})")
        revision, history = row
        self._store._mark(("kv", self.name), key)
        expires = None if ttl is None else now + ttl
        db.execute("INSERT INTO kv (bucket, key, revision, op, value, ts, expires) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (self.name, key, revision, op, value, now, expires))
        db.execute("DELETE FROM kv_expiry WHERE bucket = ? AND key = ?", (self.name, key))
        if expires is not None:
            db.execute("INSERT INTO kv_expiry (bucket, key, expires) VALUES (?, ?, ?)",
                       (self.name, key, expires))
        db.execute("DELETE FROM kv WHERE bucket = ? AND key = ? AND revision <= ("
                   "SELECT revision FROM kv WHERE bucket = ? AND key = ? "
                   "ORDER BY revision DESC LIMIT 1 OFFSET ?)",
                   (self.name, key, self.name, key, history))
        return int(revision)

    def _purge_expired(self, db: sqlite3.Connection, now: float) -> None:
        """Turn every key whose time-to-live passed by `now` into a `del` revision."""
        rows = db.execute("SELECT key, expires FROM kv_expiry WHERE bucket = ? AND expires <= ? "
                          "ORDER BY expires, key", (self.name, now)).fetchall()
        for key, expires in rows:
            self._write(db, key, "del", None, None, expires)
