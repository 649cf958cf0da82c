"""The storage contract every service uses, shaped like NATS JetStream.

Two primitives, and nothing above `interlink.store` knows which engine serves them:

* a **Log** (a JetStream stream): an append-only sequence of messages, each with a subject
  (dot-separated tokens), a per-log sequence number starting at 1, and an optional message id
  that deduplicates appends within a window; readable from any sequence; consumed by durable
  **Consumers** that track what was acknowledged and redeliver what was not.
* a **KV** bucket (a JetStream key-value bucket): keys with revisions, compare-and-swap,
  history, time-to-live and watch by prefix.

Engines are async resources: `async with open_store(...) as store:`; `aclose()` is idempotent
and every operation afterwards raises `StoreClosed`. Engine exceptions (sqlite3, nats-py) are
translated inside the engine into `interlink.errors.StoreError` subclasses.

Subjects and filters use the NATS grammar: tokens separated by `.`; in a filter `*` matches
exactly one token and `>` (last token only) matches one or more tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

DeliverPolicy = Literal["all", "new"]


@dataclass(frozen=True, slots=True)
class LogMessage:
    """One message of a log, as read or as delivered to a consumer."""

    seq: int
    subject: str
    data: bytes
    msg_id: str | None
    ts: float
    headers: dict[str, str] = field(default_factory=dict)
    deliveries: int = 0
    """How many times a consumer has delivered it, this delivery included (0 for plain reads)."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What append() did: the message's sequence, and whether it was a duplicate."""

    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A frozen snapshot of a consumer's state, for CLIs and the console."""

    name: str
    filter: str
    ack_floor: int
    """Every message at or below this sequence is acknowledged (or terminated)."""
    delivered_seq: int
    """Highest sequence handed out so far."""
    ack_pending: int
    """Delivered, not yet acknowledged."""
    num_pending: int
    """Matching messages not yet delivered (the lag)."""
    redelivered: int
    """Messages currently pending that were delivered more than once."""
    dead_lettered: int


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One revision of a key."""

    bucket: str
    key: str
    value: bytes | None
    """None for a delete (or a purge by time-to-live)."""
    revision: int
    """Bucket-wide, strictly increasing: a later write always has a higher revision."""
    ts: float
    op: Literal["put", "del"] = "put"
    expires: float | None = None


@runtime_checkable
class Consumer(Protocol):
    """A durable consumer of a log.

    Guarantees:
    * **Durable**: its position (ack floor and pending set) survives the process and the store
      being closed and reopened; a consumer re-opened by name resumes after its last ack.
    * **At least once**: a message fetched and not acknowledged within `ack_wait` seconds is
      delivered again (to any fetcher of the same consumer; several fetchers share the work, each
      message going to one of them: that is a consumer group).
    * **Max deliver**: with `max_deliver = n > 0`, a message delivered n times and still not
      acknowledged is not delivered again; it is appended to the log's `dead_letter` subject
      (if configured) with headers `reason`, `deliveries`, `original-seq`, `original-subject`,
      and counted in `dead_lettered`.
    * **Order**: new messages are handed out in sequence order; redeliveries come before new ones.
    """

    name: str

    async def fetch(self, batch: int = 1, *, timeout: float = 0.0) -> list[LogMessage]:
        """Up to `batch` messages; waits up to `timeout` seconds for the first one."""

    async def ack(self, seq: int) -> None:
        """Done with `seq`: it will never be delivered again. Acking twice is harmless;
        acking a sequence this consumer never delivered raises NotFound."""

    async def nak(self, seq: int, *, delay: float = 0.0) -> None:
        """Deliver `seq` again after `delay` seconds (counts as a delivery attempt)."""

    async def in_progress(self, seq: int) -> None:
        """Still working on `seq`: restart its ack-wait clock."""

    async def term(self, seq: int) -> None:
        """Never deliver `seq` again, without processing it."""

    async def reclaim(self) -> None:
        """Make every message handed out and not settled deliverable again now, whoever holds
        it (after the process that fetched them died: their acks will never come)."""

    async def info(self) -> ConsumerInfo:
        """A snapshot of the consumer's state."""


@runtime_checkable
class Log(Protocol):
    """An append-only, durable, sequenced log (a JetStream stream)."""

    name: str

    async def append(self, subject: str, data: bytes, *, msg_id: str | None = None,
                     headers: dict[str, str] | None = None,
                     expect_last: int | None = None) -> AppendResult:
        """Store a message and return its sequence once it is durable (or, with an engine
        that groups commits, once it will be at the next `Store.flush()`).

        With `msg_id`, a second append of the same id within the dedup window is not stored:
        the result names the original sequence and `duplicate=True` (checked first).
        With `expect_last`, the message is stored only if the last message on `subject` is at
        that sequence (0: there is none yet), else RevisionMismatch — so several writers can
        extend a chain or a numbering without forking it.
        """

    async def last(self, subject: str) -> LogMessage | None:
        """The last message stored on `subject` (a plain subject, not a filter), or None."""

    async def read(self, start_seq: int = 1, *, subject: str = ">",
                   limit: int = 100) -> list[LogMessage]:
        """Messages with sequence >= start_seq matching `subject` (a filter), in order."""

    async def seq_at(self, ts: float) -> int:
        """The first sequence stored at or after time `ts` (last_seq()+1 when none)."""

    async def last_seq(self) -> int:
        """The highest sequence stored (0 for an empty log)."""

    async def wait_for(self, after_seq: int, *, timeout: float) -> bool:
        """Wait until a message with sequence > after_seq exists; False on timeout."""

    async def consumer(self, name: str, *, filter: str = ">", ack_wait: float = 30.0,
                       max_deliver: int = -1, dead_letter: str | None = None,
                       deliver: DeliverPolicy = "all") -> Consumer:
        """Create the durable consumer `name`, or open it if it exists (its stored settings
        are updated to these; its position is kept)."""

    async def open_consumer(self, name: str) -> Consumer:
        """Open the existing durable consumer `name` with its stored settings; NotFound when
        there is none."""

    async def consumers(self) -> list[ConsumerInfo]:
        """Every durable consumer of this log."""

    async def delete_consumer(self, name: str) -> None:
        """Forget a durable consumer and its position."""

    async def subjects(self) -> dict[str, int]:
        """Message counts per subject."""


@runtime_checkable
class KV(Protocol):
    """A key-value bucket with revisions, compare-and-swap, history, TTL and watch.

    Keys are non-empty strings of letters, digits and `-_.=/:@` (dots and slashes make
    hierarchy for prefix listing and watching).
    """

    name: str

    async def get(self, key: str) -> KVEntry | None:
        """The current entry, or None when absent, deleted or expired."""

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        """Write unconditionally; returns the new revision."""

    async def create(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        """Write only if the key is absent (or deleted/expired); else KeyExists."""

    async def update(self, key: str, value: bytes, *, expect: int,
                     ttl: float | None = None) -> int:
        """Compare-and-swap: write only if the key's current revision is `expect`;
        else RevisionMismatch carrying the current revision."""

    async def delete(self, key: str, *, expect: int | None = None) -> int:
        """Delete (a tombstone revision, kept in history); with `expect`, only at that revision."""

    async def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with `prefix`, sorted."""

    async def items(self, prefix: str = "") -> list[KVEntry]:
        """Live entries whose key starts with `prefix`, sorted by key."""

    async def history(self, key: str) -> list[KVEntry]:
        """Past revisions of a key, oldest first (up to the bucket's history depth)."""

    async def revision(self) -> int:
        """The bucket's latest revision (0 before the first write): a watch started with
        `after_revision=` this value sees every change made after this call."""

    def watch(self, prefix: str = "", *, after_revision: int | None = None
              ) -> AsyncIterator[KVEntry]:
        """Changes to keys starting with `prefix`, in revision order.

        With `after_revision`, first every retained change with a higher revision, then live
        changes; without it, only live changes. Each change is seen once.
        """


@runtime_checkable
class Store(Protocol):
    """An opened storage engine: a namespace of logs and KV buckets."""

    engine: str

    async def log(self, name: str, *, dedup_window: float = 120.0,
                  max_age: float | None = None) -> Log:
        """Open (creating if needed) the log `name`. Its settings are stored for every user:
        `dedup_window` seconds for `msg_id`s, and `max_age` — messages older than it may be
        removed (None keeps everything)."""

    async def kv(self, name: str, *, history: int = 64) -> KV:
        """Open (creating if needed) the KV bucket `name`, keeping `history` revisions a key."""

    async def flush(self) -> None:
        """Return once every write this store has reported done is durable. An engine may let
        writes share one commit (SQLite's `group_commit`, JetStream's asynchronous publishes
        awaited together): then a write is durable at the next `flush()`, and whoever hands
        what it wrote or read to anyone outside the process flushes first. Without that
        option, writes are durable when they return and `flush()` does nothing."""

    def health(self) -> str | None:
        """None while the store is usable; otherwise what is wrong, in words (the server is
        unreachable and the engine is reconnecting; a failed commit stopped it)."""

    async def aclose(self) -> None:
        """Flush, then release the engine; idempotent. Afterwards every operation raises
        StoreClosed."""
