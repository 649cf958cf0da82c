"""The NATS JetStream engine: the storage contract on streams of a JetStream server (nats-py).

    async with JetStreamStore(["nats://127.0.0.1:4222"]) as store:
        log = await store.log("calls")
        kv = await store.kv("registry")

Several hubs (and CLIs) may open the same JetStream at once: everything a store holds is on the
server, and every check that must hold across them is the server's (sequences, the publish
dedup window, compare-and-swap with `Nats-Expected-Last-Subject-Sequence`, consumers handing
each message to one fetcher). What a store object keeps in its own process is a cache or a
handle, never the truth.

Mapping (`prefix` defaults to `IL`, so `nats stream ls` shows what is Interlink's):

* a log `name` is the stream `IL_LOG_<name>` on subjects `IL.log.<name>.<subject>`; a message's
  msg id and headers ride in the headers `Il-Msg-Id` and `Il-Headers` (JSON, so any header
  name works), its dedup uses `Nats-Msg-Id` within the stream's duplicate window;
* a consumer is a durable pull consumer (explicit acks, `ack_wait`); `max_deliver` and the dead
  letter are the engine's: a message fetched for the (max_deliver+1)th time is appended to the
  dead-letter subject and terminated, and counted on the subject `il.meta.dead.<stream>.<name>`
  of the `IL_META` stream (so every handle sees the count). Acks go back with the reply subject
  of the delivery, so `ack(seq)` works for messages this store object fetched; a sequence the
  consumer delivered to another process is left to the server's ack-wait (it comes back);
* a bucket `name` is the stream `IL_KV_<name>` on subjects `IL.kv.<name>.<key>` (the key in
  base64url: keys may hold characters subjects may not), `max_msgs_per_subject` = history; a
  revision is the stream sequence; a delete is a message with `Il-Op: del`; a time-to-live is
  the header `Il-Ttl`, counted from the server's time stamp on the entry (the server's own
  per-message TTL needs nats-server 2.11); an entry past it reads as absent, and a watcher
  writes its `del` revision when it passes, so every watcher sees it go.

Names of logs, buckets and consumers are used as they are when they are letters, digits, `-`
and `_`, and hex-encoded (`x…`) otherwise. Differences from the SQLite engine, all allowed by
the contract: there is no injected clock (the server stamps messages), a watch started without
`after_revision` counts live changes from the server time of the call, and `flush()` has
nothing to wait for (every write returns once the server stored it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import (
    ConnectionClosedError,
    NoRespondersError,
    NoServersError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.api import DeliverPolicy as JsDeliver
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.errors import NotFoundError as JsNotFound

from interlink.errors import (
    KeyExists,
    NotFound,
    RevisionMismatch,
    StoreClosed,
    StoreError,
    StoreUnavailable,
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

log = logging.getLogger("interlink.store.jetstream")

MSG_ID = "Il-Msg-Id"
HEADERS = "Il-Headers"
OP = "Il-Op"
TTL = "Il-Ttl"
_WRONG_LAST = 10071
_AWAY = (NatsTimeout, TimeoutError, OutboundBufferLimitError, NoRespondersError,
         NoStreamResponseError)
"""The server (or, in a cluster, the stream's leader) is not answering now: StoreUnavailable."""
_FAILED = (APIError, ConnectionClosedError, *_AWAY)
"""What a request to the server can fail with: each becomes a StoreError (`_failed`)."""
MAX_HISTORY = 64
"""The most revisions a JetStream stream keeps per subject (a bucket asking for more keeps
this many)."""
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
API_TIMEOUT = 5.0
"""Seconds to wait for the server's answer to one request before saying it is unreachable."""
_MARGIN = 2.0
"""How long past a pull request's own expiry its answer may take to arrive."""
RECLAIM_WAIT = 1.0
"""The ack-wait a reclaimed consumer runs on until the deliveries a dead process held lapse."""
CONNECT_TRIES = 4
"""Tries to reach a server when opening (0.5, 1, 2 s apart) before saying it is unreachable."""
_NO_WAIT_MARGIN = 0.5
"""How long an answer to a pull of what is there now may take (after that, the consumer is
checked: only a missing one stays silent)."""


def _enc(name: str) -> str:
    """A log, bucket or consumer name as a stream/subject token."""
    return name if _PLAIN_NAME.fullmatch(name) else "x" + name.encode().hex()


def _key_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _key_of(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def _epoch(when: datetime.datetime | None) -> float:
    return when.timestamp() if when is not None else time.time()


def _status(msg: Msg) -> str | None:
    return (msg.headers or {}).get("Status") if msg.headers else None


def _wrong_last(exc: APIError) -> int | None:
    """The subject's current sequence, from a failed compare-and-swap publish."""
    if exc.err_code != _WRONG_LAST:
        return None
    found = re.search(r"(\d+)\s*$", exc.description or "")
    return int(found.group(1)) if found else 0


class _NoClaim:
    """Several hubs share one JetStream: there is nothing to claim."""

    def release(self) -> None:
        return None


class JetStreamStore:
    """The storage contract over a NATS JetStream server or cluster.

    `servers`: one URL or several (`nats://host:port`, `tls://host:port`); `replicas`: how many
    copies of each stream a cluster keeps; `prefix`: the start of every stream name;
    `tls_ca`, `tls_cert`, `tls_key`: files for a server that wants TLS (a `tls://` URL or a
    server that asks for it).
    """

    engine: str = "nats"
    shared: bool = True  # any number of processes reach it: a hub takes a lease

    def __init__(self, servers: str | Sequence[str], *, replicas: int = 1, prefix: str = "IL",
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, connect_timeout: float = 5.0) -> None:
        urls = [servers] if isinstance(servers, str) else list(servers)
        if not urls:
            raise StoreError("the nats engine needs at least one server URL")
        if not (isinstance(replicas, int) and 1 <= replicas <= 5):
            raise StoreError(f"replicas must be 1 to 5, not {replicas!r}")
        if _PLAIN_NAME.fullmatch(prefix) is None:
            raise StoreError(f"invalid stream prefix {prefix!r}: letters, digits, - and _")
        self.servers = urls
        self.replicas = replicas
        self.prefix = prefix
        self._tls = (tls_ca, tls_cert, tls_key)
        self._connect_timeout = connect_timeout
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._closed = False
        self._last_error: Exception | None = None
        self._streams: dict[str, tuple[int | None, float, float | None]] = {}
        self._down_since: float | None = None
        self._delivered: dict[tuple[str, str, int], Msg] = {}
        """Messages this store fetched and has not settled: (stream, consumer, seq) → msg."""

    # -- lifecycle ----------------------------------------------------------------------------

    def claim(self, owner: str) -> _NoClaim:
        """Nothing to claim: any number of hubs may share a JetStream."""
        return _NoClaim()

    async def open(self) -> Self:
        if self._closed:
            raise StoreClosed("the nats store was closed; open a new one")
        if self._nc is not None:
            return self
        options: dict[str, Any] = {}
        ca, cert, key = self._tls
        if ca or cert or any(url.startswith("tls://") for url in self.servers):
            import ssl
            context = ssl.create_default_context(cafile=ca)
            if cert:
                context.load_cert_chain(cert, key)
            options["tls"] = context
        await self._reachable()
        client = NatsClient()
        self._last_error = None
        try:
            # nats-py retries a failing first connection (a TLS refusal, say) for ever
            await asyncio.wait_for(client.connect(
                servers=self.servers, name="interlink",
                connect_timeout=max(1, round(self._connect_timeout)),
                max_reconnect_attempts=-1, reconnect_time_wait=1,
                # nothing is buffered while reconnecting: a write that fails now must not
                # land later, after its caller was told it failed
                pending_size=0,
                allow_reconnect=True, error_cb=self._on_error,
                disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect,
                **options), self._connect_timeout + 2)
        except (NoServersError, OSError, TimeoutError, NatsTimeout) as exc:
            with contextlib.suppress(Exception):
                await client.close()
            why = str(self._last_error or exc) or type(exc).__name__
            if "CERTIFICATE" in why.upper():
                raise StoreError(f"NATS at {', '.join(self.servers)} has a certificate this "
                                 f"hub does not trust ({why}): give its CA (?tls_ca=FILE in "
                                 "the store URL)") from exc
            raise StoreError(f"cannot connect to NATS at {', '.join(self.servers)} ({why}): is "
                             "nats-server running with JetStream (`nats-server -js`), and "
                             "does it want TLS (tls://…)?") from exc
        self._nc = client
        self._js = self._nc.jetstream(timeout=API_TIMEOUT)
        try:
            await self._stream(f"{self.prefix}_META", f"{self.prefix}.meta.>", dedup=0.0)
        except StoreError:
            await self._nc.close()
            self._nc = None
            raise
        return self

    async def _reachable(self) -> None:
        """Wait, with backoff and a log line per try, until one server accepts a connection;
        StoreError after `CONNECT_TRIES` (nats-py itself would retry a dead URL for ever)."""
        pause = 0.5
        for attempt in range(1, CONNECT_TRIES + 1):
            problems = []
            for url in self.servers:
                parts = urlsplit(url)
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(
                        parts.hostname or "127.0.0.1", parts.port or 4222),
                        self._connect_timeout)
                    writer.close()
                    return
                except (OSError, TimeoutError) as exc:
                    why = "no answer in time" if isinstance(exc, TimeoutError) else (
                        os.strerror(exc.errno) if exc.errno else str(exc)).lower()
                    problems.append(f"{parts.netloc}: {why}")
            if attempt == CONNECT_TRIES:
                raise StoreError(f"cannot reach NATS ({'; '.join(problems)}) after "
                                 f"{CONNECT_TRIES} tries: is nats-server running with "
                                 "JetStream (`nats-server -js`) at that address?")
            log.warning("NATS not reachable (%s); trying again in %.1fs",
                        "; ".join(problems), pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 4.0)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        log.warning("NATS: %s", exc)

    async def _on_disconnect(self) -> None:
        if not self._closed:
            self._down_since = time.time()
            log.warning("lost the connection to NATS at %s; reconnecting every second "
                        "(what needs the store is refused until then)", ", ".join(self.servers))

    async def _on_reconnect(self) -> None:
        down = time.time() - self._down_since if self._down_since else 0.0
        self._down_since = None
        log.warning("reconnected to NATS after %.1fs", down)

    def health(self) -> str | None:
        if self._closed:
            return "the store is closed"
        if self._down_since is not None or (self._nc is not None and not self._nc.is_connected):
            since = time.time() - (self._down_since or time.time())
            return (f"NATS at {', '.join(self.servers)} is unreachable (for {since:.0f}s); "
                    "reconnecting")
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def flush(self) -> None:
        """Nothing waits: every write returned once the server had stored it."""
        self._client()

    # -- plumbing -----------------------------------------------------------------------------

    def _client(self) -> tuple[NatsClient, JetStreamContext]:
        if self._closed:
            raise StoreClosed("the nats store is closed; open a new one")
        if self._nc is None or self._js is None:
            raise StoreError("the nats store is not open: use `async with` or "
                             "`await store.open()`")
        return self._nc, self._js

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        if self._closed or isinstance(exc, ConnectionClosedError):
            return StoreClosed("the nats store is closed; open a new one")
        problem = self.health()
        if problem is not None or isinstance(exc, OutboundBufferLimitError):
            return StoreUnavailable(f"{what}: {problem or 'NATS is unreachable'}")
        if isinstance(exc, (NoRespondersError, NoStreamResponseError, ServiceUnavailableError)):
            return StoreUnavailable(f"{what}: no JetStream server answered for it (a cluster "
                                    "electing a leader, or the stream's servers are down)")
        if isinstance(exc, (NatsTimeout, TimeoutError)):
            return StoreUnavailable(f"{what}: NATS did not answer within {API_TIMEOUT:g}s "
                                    f"(is the server at {', '.join(self.servers)} up?)")
        return StoreError(f"{what}: {exc}")

    async def _stream(self, name: str, subjects: str, *, dedup: float,
                      per_subject: int | None = None, max_age: float | None = None) -> str:
        """Create the stream, or bring its settings to these."""
        _, js = self._client()
        want = (per_subject, dedup, max_age)
        if self._streams.get(name) == want:
            return name
        config = StreamConfig(
            name=name, subjects=[subjects], storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS, num_replicas=self.replicas,
            duplicate_window=dedup if dedup >= 0.1 else 0.1,  # the least it takes
            max_msgs_per_subject=per_subject if per_subject is not None else -1,
            max_age=max_age or 0.0, allow_direct=True)
        try:
            try:
                info = await js.stream_info(name)
            except JsNotFound:
                await js.add_stream(config)
            else:
                current = info.config
                if (per_subject is not None and current.max_msgs_per_subject != per_subject) or (
                        per_subject is None and dedup > 0
                        and abs((current.duplicate_window or 0) - max(dedup, 0.1)) > 1e-6) or (
                        abs((current.max_age or 0.0) - (max_age or 0.0)) > 1e-6):
                    await js.update_stream(config)
        except _FAILED as exc:
            raise self._failed(f"cannot create the stream {name}", exc) from exc
        self._streams[name] = want
        return name

    async def _pull(self, stream: str, consumer: str, batch: int, *,
                    wait: float = 0.0) -> list[Msg]:
        """Up to `batch` messages from a pull consumer: what is there now, or with `wait` the
        first that comes within `wait` seconds (then whatever else is there at once)."""
        got = await self._request(stream, consumer, batch)
        if got or wait <= 0:
            return got
        got = await self._request(stream, consumer, 1, wait=wait)
        if got and batch > 1:
            got += await self._request(stream, consumer, batch - 1)
        return got

    async def _request(self, stream: str, consumer: str, batch: int, *,
                       wait: float = 0.0) -> list[Msg]:
        """One pull request: `batch` messages at most, waiting up to `wait` seconds for them
        (without: only what is there now). The server answers every request (messages, then a
        status when it ends short), so nothing it hands out is left behind in a dropped inbox."""
        nc, _ = self._client()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        request: dict[str, Any] = {"batch": batch}
        if wait > 0:
            request["expires"] = int(wait * 1e9)
        else:
            request["no_wait"] = True
        got: list[Msg] = []
        answered = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait + _MARGIN if wait > 0 else _NO_WAIT_MARGIN)
        try:
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                             json.dumps(request).encode(), reply=inbox)
            while len(got) < batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=left)
                except (NatsTimeout, TimeoutError):
                    break
                answered = True
                status = _status(msg)
                if status is None:
                    got.append(msg)
                elif status == "100":
                    continue
                elif status in ("404", "408"):
                    break
                elif status == "409" and not got:
                    description = (msg.headers or {}).get("Description", "")
                    if "deleted" in description.lower():
                        raise NotFound(f"consumer {consumer!r} was deleted")
                    break
                else:
                    break
        except (ConnectionClosedError, *_AWAY) as exc:
            raise self._failed("fetch", exc) from exc
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if not answered:  # a live consumer always answers; is this one gone?
            _, js = self._client()
            try:
                await js.consumer_info(stream, consumer)
            except JsNotFound:
                raise NotFound(f"the consumer {consumer!r} does not exist (was it "
                               "deleted?)") from None
            except _FAILED as exc:
                raise self._failed("fetch", exc) from exc
        return got

    async def _ephemeral(self, stream: str, filter_subject: str, deliver: JsDeliver, *,
                         start_seq: int | None = None,
                         start_time: datetime.datetime | None = None) -> tuple[str, int]:
        """A short-lived consumer for reading (no acks): its name and how many it will hand
        out."""
        _, js = self._client()
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=deliver,
                                opt_start_seq=start_seq, opt_start_time=start_time,
                                filter_subject=filter_subject, inactive_threshold=30.0,
                                mem_storage=True, num_replicas=1)
        try:
            info = await js.add_consumer(stream, config)
        except _FAILED as exc:
            raise self._failed(f"cannot read the stream {stream}", exc) from exc
        return str(info.name), int(info.num_pending or 0)

    async def _read_all(self, stream: str, filter_subject: str, deliver: JsDeliver, *,
                        start_seq: int | None = None, limit: int | None = None) -> list[Msg]:
        name, pending = await self._ephemeral(stream, filter_subject, deliver,
                                              start_seq=start_seq)
        want = pending if limit is None else min(pending, limit)
        got: list[Msg] = []
        try:
            while len(got) < want:
                batch = await self._pull(stream, name, min(256, want - len(got)), wait=1.0)
                if not batch:
                    break
                got += batch
        finally:
            await self._forget_consumer(stream, name)
        return got

    async def _forget_consumer(self, stream: str, name: str) -> None:
        if self._closed or self._js is None:
            return
        with contextlib.suppress(Exception):
            await self._js.delete_consumer(stream, name)

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str],
                       stream: str) -> Any:
        _, js = self._client()
        try:
            return await js.publish(subject, data, headers=headers or None, stream=stream)
        except (ConnectionClosedError, *_AWAY) as exc:
            raise self._failed(f"cannot write to {stream}", exc) from exc

    # -- the contract ---------------------------------------------------------------------------

    async def log(self, name: str, *, dedup_window: float = 120.0,
                  max_age: float | None = None) -> JetStreamLog:
        check_name("log", name)
        if not dedup_window >= 0:
            raise StoreError(f"dedup_window must be >= 0 seconds, not {dedup_window!r}")
        if max_age is not None and not max_age > 0:
            raise StoreError(f"max_age must be > 0 seconds or None, not {max_age!r}")
        stream = await self._stream(f"{self.prefix}_LOG_{_enc(name)}",
                                    f"{self.prefix}.log.{_enc(name)}.>", dedup=float(dedup_window),
                                    max_age=max_age)
        return JetStreamLog(self, name, stream, dedup_window)

    async def kv(self, name: str, *, history: int = 64) -> JetStreamKV:
        check_name("bucket", name)
        if not (isinstance(history, int) and history >= 1):
            raise StoreError(f"history must be a positive integer, not {history!r}")
        if history > MAX_HISTORY:
            log.info("bucket %s keeps %d revisions a key, JetStream's most (asked for %d)",
                     name, MAX_HISTORY, history)
            history = MAX_HISTORY
        stream = await self._stream(f"{self.prefix}_KV_{_enc(name)}",
                                    f"{self.prefix}.kv.{_enc(name)}.>", dedup=0.0,
                                    per_subject=history)
        return JetStreamKV(self, name, stream)


# -- logs -----------------------------------------------------------------------------------

def _user_headers(msg_headers: dict[str, str] | None) -> dict[str, str]:
    raw = (msg_headers or {}).get(HEADERS)
    return dict(json.loads(raw)) if raw else {}


class JetStreamLog:
    """A log in a JetStreamStore (see `interlink.store.contract.Log`)."""

    def __init__(self, store: JetStreamStore, name: str, stream: str,
                 dedup_window: float) -> None:
        self._store = store
        self.name = name
        self._stream = stream
        self._dedup = dedup_window
        self._root = f"{store.prefix}.log.{_enc(name)}."

    def _subject(self, subject: str) -> str:
        return self._root + subject

    def _message(self, subject: str, seq: int, data: bytes, headers: dict[str, str] | None,
                 when: datetime.datetime | None, deliveries: int = 0) -> LogMessage:
        return LogMessage(seq=seq, subject=subject[len(self._root):], data=data,
                          msg_id=(headers or {}).get(MSG_ID), ts=_epoch(when),
                          headers=_user_headers(headers), deliveries=deliveries)

    def _from_msg(self, msg: Msg, deliveries: int = 0) -> LogMessage:
        meta = msg.metadata
        return self._message(msg.subject, int(meta.sequence.stream), msg.data, msg.headers,
                             meta.timestamp, deliveries)

    async def append(self, subject: str, data: bytes, *, msg_id: str | None = None,
                     headers: dict[str, str] | None = None,
                     expect_last: int | None = None) -> AppendResult:
        check_subject(subject)
        payload = as_bytes("data", data)
        if msg_id is not None and (not isinstance(msg_id, str) or not msg_id):
            raise StoreError(f"msg_id must be a non-empty string or None, not {msg_id!r}")
        check_expect_last(expect_last)
        fields = check_headers(headers)
        wire: dict[str, str] = {}
        if fields:
            wire[HEADERS] = json.dumps(fields, separators=(",", ":"))
        if msg_id is not None:
            wire[MSG_ID] = msg_id
            if self._dedup > 0:
                wire["Nats-Msg-Id"] = msg_id
        if expect_last is not None:
            wire["Nats-Expected-Last-Subject-Sequence"] = str(expect_last)
        try:
            ack = await self._store._publish(self._subject(subject), payload, wire,
                                             self._stream)
        except BadRequestError as exc:
            current = _wrong_last(exc)
            if current is None or expect_last is None:
                raise self._store._failed(f"cannot append to {self.name}", exc) from exc
            raise RevisionMismatch(subject, expect_last, current) from None
        return AppendResult(seq=int(ack.seq), duplicate=bool(ack.duplicate))

    async def last(self, subject: str) -> LogMessage | None:
        check_subject(subject)
        _, js = self._store._client()
        try:
            raw = await js.get_msg(self._stream, subject=self._subject(subject))
        except JsNotFound:
            return None
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the log {self.name}", exc) from exc
        return self._message(str(raw.subject), int(raw.seq or 0), raw.data or b"",
                             raw.headers, raw.time)

    async def read(self, start_seq: int = 1, *, subject: str = ">",
                   limit: int = 100) -> list[LogMessage]:
        check_filter(subject)
        if limit < 0:
            raise StoreError(f"limit must be >= 0, not {limit!r}")
        if limit == 0 or start_seq > await self.last_seq():
            return []
        got = await self._store._read_all(self._stream, self._subject(subject),
                                          JsDeliver.BY_START_SEQUENCE,
                                          start_seq=max(1, start_seq), limit=limit)
        return [self._from_msg(m) for m in got]

    async def seq_at(self, ts: float) -> int:
        last = await self.last_seq()
        if last == 0:
            return 1
        name, pending = await self._store._ephemeral(
            self._stream, self._root + ">", JsDeliver.BY_START_TIME,
            start_time=datetime.datetime.fromtimestamp(ts, tz=datetime.UTC))
        try:
            if not pending:
                return last + 1
            first = await self._store._pull(self._stream, name, 1, wait=1.0)
            return int(first[0].metadata.sequence.stream) if first else last + 1
        finally:
            await self._store._forget_consumer(self._stream, name)

    async def last_seq(self) -> int:
        _, js = self._store._client()
        try:
            info = await js.stream_info(self._stream)
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the log {self.name}", exc) from exc
        return int(info.state.last_seq)

    async def wait_for(self, after_seq: int, *, timeout: float) -> bool:
        nc, _ = self._store._client()
        sub = await nc.subscribe(self._root + ">")
        try:
            if await self.last_seq() > after_seq:
                return True
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while (left := end - loop.time()) > 0:
                try:
                    await sub.next_msg(timeout=left)
                except (NatsTimeout, TimeoutError):
                    break
                except (ConnectionClosedError, OutboundBufferLimitError) as exc:
                    raise self._store._failed("wait_for", exc) from exc
                if await self.last_seq() > after_seq:
                    return True
            self._store._client()
            return await self.last_seq() > after_seq
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def consumer(self, name: str, *, filter: str = ">", ack_wait: float = 30.0,
                       max_deliver: int = -1, dead_letter: str | None = None,
                       deliver: DeliverPolicy = "all") -> JetStreamConsumer:
        check_consumer(name, filter, ack_wait, max_deliver, dead_letter, deliver)
        _, js = self._store._client()
        durable = _enc(name)
        settings = json.dumps({"name": name, "filter": filter, "max_deliver": max_deliver,
                               "dead_letter": dead_letter}, separators=(",", ":"))
        config = ConsumerConfig(
            durable_name=durable, description=settings, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=float(ack_wait), max_deliver=-1, filter_subject=self._subject(filter),
            deliver_policy=JsDeliver.NEW if deliver == "new" else JsDeliver.ALL,
            max_ack_pending=-1, num_replicas=self._store.replicas)
        try:
            try:
                info = await js.consumer_info(self._stream, durable)
            except JsNotFound:
                await js.add_consumer(self._stream, config)
            else:
                current = info.config
                if (current.filter_subject != config.filter_subject
                        or abs((current.ack_wait or 0) - ack_wait) > 1e-6
                        or current.description != settings):
                    # updated in place (position kept); where it starts cannot change
                    config.deliver_policy = current.deliver_policy
                    config.opt_start_seq = current.opt_start_seq
                    await js.add_consumer(self._stream, config)
        except _FAILED as exc:
            raise self._store._failed(f"cannot set up the consumer {name}", exc) from exc
        return JetStreamConsumer(self, name, durable, filter, max_deliver, dead_letter)

    async def open_consumer(self, name: str) -> JetStreamConsumer:
        _, js = self._store._client()
        durable = _enc(name)
        try:
            info = await js.consumer_info(self._stream, durable)
        except JsNotFound as exc:
            raise NotFound(f"log {self.name!r} has no consumer {name!r}") from exc
        except _FAILED as exc:
            raise self._store._failed(f"cannot open the consumer {name}", exc) from exc
        return self._handle(info)

    def _handle(self, info: Any) -> JetStreamConsumer:
        """A handle on a consumer from its server-side description (our settings in it)."""
        settings = json.loads(info.config.description)
        return JetStreamConsumer(self, settings["name"], info.config.durable_name,
                                 settings["filter"], settings["max_deliver"],
                                 settings["dead_letter"])

    async def consumers(self) -> list[ConsumerInfo]:
        _, js = self._store._client()
        try:
            infos = await js.consumers_info(self._stream)
        except _FAILED as exc:
            raise self._store._failed(f"cannot list the consumers of {self.name}", exc) from exc
        out = []
        for info in infos:
            if not info.config.durable_name or not info.config.description:
                continue
            out.append(await self._handle(info)._info(info))
        return sorted(out, key=lambda c: c.name)

    async def delete_consumer(self, name: str) -> None:
        _, js = self._store._client()
        try:
            await js.delete_consumer(self._stream, _enc(name))
        except JsNotFound as exc:
            raise NotFound(f"log {self.name!r} has no consumer {name!r}") from exc
        except _FAILED as exc:
            raise self._store._failed(f"cannot delete the consumer {name}", exc) from exc

    async def subjects(self) -> dict[str, int]:
        _, js = self._store._client()
        try:
            info = await js.stream_info(self._stream, subjects_filter=self._root + ">")
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the log {self.name}", exc) from exc
        counts = info.state.subjects or {}
        return {s[len(self._root):]: int(n) for s, n in sorted(counts.items())}


# -- consumers ------------------------------------------------------------------------------

class JetStreamConsumer:
    """A durable consumer in a JetStreamStore (see `interlink.store.contract.Consumer`)."""

    def __init__(self, log_: JetStreamLog, name: str, durable: str, filter: str,
                 max_deliver: int, dead_letter: str | None) -> None:
        self._log = log_
        self._store = log_._store
        self.name = name
        self._durable = durable
        self._filter = filter
        self._max_deliver = max_deliver
        self._dead_letter = dead_letter
        self._dead_subject = f"{log_._store.prefix}.meta.dead.{log_._stream}.{durable}"

    def _key(self, seq: int) -> tuple[str, str, int]:
        return (self._log._stream, self._durable, seq)

    async def fetch(self, batch: int = 1, *, timeout: float = 0.0) -> list[LogMessage]:
        if not (isinstance(batch, int) and batch >= 1):
            raise StoreError(f"batch must be a positive integer, not {batch!r}")
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, timeout)
        while True:
            got = await self._store._pull(self._log._stream, self._durable, batch,
                                          wait=end - loop.time())
            messages = [m for m in [await self._take(msg) for msg in got] if m is not None]
            if messages or end - loop.time() <= 0:
                return messages

    async def _take(self, msg: Msg) -> LogMessage | None:
        """A fetched message as the contract hands it out, or None when it is dead-lettered."""
        meta = msg.metadata
        seq, deliveries = int(meta.sequence.stream), int(meta.num_delivered)
        message = self._log._from_msg(msg, deliveries)
        if 0 < self._max_deliver < deliveries:
            if self._dead_letter is not None:
                headers = {**message.headers, "reason": "max_deliver",
                           "deliveries": str(deliveries - 1), "original-seq": str(seq),
                           "original-subject": message.subject}
                await self._log.append(self._dead_letter, message.data, headers=headers)
            await self._store._publish(self._dead_subject, b"", {}, f"{self._store.prefix}_META")
            await self._reply(msg, b"+TERM")
            return None
        self._store._delivered[self._key(seq)] = msg
        return message

    async def _reply(self, msg: Msg, body: bytes) -> None:
        nc, _ = self._store._client()
        try:
            await nc.request(msg.reply, body, timeout=API_TIMEOUT)
        except (ConnectionClosedError, *_AWAY) as exc:
            raise self._store._failed("acknowledging a message", exc) from exc

    async def _settled_or_unknown(self, seq: int) -> None:
        """`seq` is not among this store's deliveries: harmless if the consumer delivered it
        (settled, or fetched by another process: the server's ack-wait covers it), NotFound if
        it never did."""
        _, js = self._store._client()
        try:
            info = await js.consumer_info(self._log._stream, self._durable)
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the consumer {self.name}", exc) from exc
        delivered = int(info.delivered.stream_seq if info.delivered else 0)
        if seq <= 0 or seq > delivered:
            raise NotFound(f"consumer {self.name!r} of log {self._log.name!r} never delivered "
                           f"sequence {seq}")
        got = await self._log.read(seq, limit=1)
        if not got or got[0].seq != seq or not subject_matches(self._filter, got[0].subject):
            raise NotFound(f"consumer {self.name!r} of log {self._log.name!r} never delivered "
                           f"sequence {seq}")

    async def ack(self, seq: int) -> None:
        msg = self._store._delivered.pop(self._key(seq), None)
        if msg is None:
            await self._settled_or_unknown(seq)
            return
        await self._reply(msg, b"+ACK")

    async def term(self, seq: int) -> None:
        msg = self._store._delivered.pop(self._key(seq), None)
        if msg is None:
            await self._settled_or_unknown(seq)
            return
        await self._reply(msg, b"+TERM")

    async def nak(self, seq: int, *, delay: float = 0.0) -> None:
        if not delay >= 0:
            raise StoreError(f"delay must be >= 0 seconds, not {delay!r}")
        msg = self._store._delivered.pop(self._key(seq), None)
        if msg is None:
            await self._settled_or_unknown(seq)
            return
        body = b"-NAK"
        if delay > 0:
            body += b" " + json.dumps({"delay": int(delay * 1e9)}).encode()
        await self._reply(msg, body)

    async def in_progress(self, seq: int) -> None:
        msg = self._store._delivered.get(self._key(seq))
        if msg is None:
            await self._settled_or_unknown(seq)
            return
        await self._reply(msg, b"+WPI")

    async def reclaim(self) -> None:
        """Deliveries held by a process that is gone cannot be nak'ed from here (only their
        fetcher has their reply subjects): the consumer's ack-wait is cut to `RECLAIM_WAIT`
        until they have lapsed, then restored, so they come back now instead of after it."""
        _, js = self._store._client()
        mine = self._key(0)[:2]
        held = [(k, m) for k, m in self._store._delivered.items() if k[:2] == mine]
        try:
            info = await js.consumer_info(self._log._stream, self._durable)
            if not info.num_ack_pending:
                return
            config, ack_wait = info.config, info.config.ack_wait
            config.ack_wait = RECLAIM_WAIT
            await js.add_consumer(self._log._stream, config)
            await asyncio.sleep(RECLAIM_WAIT + 0.1)
            config.ack_wait = ack_wait
            await js.add_consumer(self._log._stream, config)
        except JsNotFound as exc:
            raise NotFound(f"log {self._log.name!r} has no consumer {self.name!r}") from exc
        except _FAILED as exc:
            raise self._store._failed(f"cannot reclaim the consumer {self.name}", exc) from exc
        for key, msg in held:  # their acks would go to lapsed deliveries (not to newer ones)
            if self._store._delivered.get(key) is msg:
                del self._store._delivered[key]

    async def info(self) -> ConsumerInfo:
        _, js = self._store._client()
        try:
            info = await js.consumer_info(self._log._stream, self._durable)
        except JsNotFound as exc:
            raise NotFound(f"log {self._log.name!r} has no consumer {self.name!r} "
                           "(was it deleted?)") from exc
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the consumer {self.name}", exc) from exc
        return await self._info(info)

    async def _info(self, info: Any) -> ConsumerInfo:
        _, js = self._store._client()
        try:
            meta = await js.stream_info(f"{self._store.prefix}_META",
                                        subjects_filter=self._dead_subject)
            dead = int((meta.state.subjects or {}).get(self._dead_subject, 0))
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the consumer {self.name}", exc) from exc
        return ConsumerInfo(
            name=self.name, filter=self._filter,
            ack_floor=int(info.ack_floor.stream_seq if info.ack_floor else 0),
            delivered_seq=int(info.delivered.stream_seq if info.delivered else 0),
            ack_pending=int(info.num_ack_pending or 0), num_pending=int(info.num_pending or 0),
            redelivered=int(info.num_redelivered or 0), dead_lettered=dead)


# -- key-value buckets ----------------------------------------------------------------------

class JetStreamKV:
    """A key-value bucket in a JetStreamStore (see `interlink.store.contract.KV`)."""

    def __init__(self, store: JetStreamStore, name: str, stream: str) -> None:
        self._store = store
        self.name = name
        self._stream = stream
        self._root = f"{store.prefix}.kv.{_enc(name)}."

    def _subject(self, key: str) -> str:
        return self._root + _key_token(key)

    def _entry(self, subject: str, seq: int, data: bytes | None,
               headers: dict[str, str] | None, when: datetime.datetime | None) -> KVEntry:
        op: Literal["put", "del"] = "del" if (headers or {}).get(OP) == "del" else "put"
        ttl = (headers or {}).get(TTL)
        ts = _epoch(when)
        return KVEntry(bucket=self.name, key=_key_of(subject[len(self._root):]),
                       value=None if op == "del" else (data or b""), revision=seq,
                       ts=ts, op=op, expires=ts + float(ttl) if ttl is not None else None)

    def _from_msg(self, msg: Msg) -> KVEntry:
        return self._entry(msg.subject, int(msg.metadata.sequence.stream), msg.data,
                           msg.headers, msg.metadata.timestamp)

    async def _last(self, key: str) -> KVEntry | None:
        """The key's last revision, live or not."""
        _, js = self._store._client()
        try:
            raw = await js.get_msg(self._stream, subject=self._subject(key))
        except JsNotFound:
            return None
        except _FAILED as exc:
            raise self._store._failed(f"cannot read {key!r}", exc) from exc
        return self._entry(str(raw.subject), int(raw.seq or 0), raw.data, raw.headers,
                           raw.time)

    @staticmethod
    def _live(entry: KVEntry | None) -> bool:
        return entry is not None and entry.op == "put" and (
            entry.expires is None or entry.expires > time.time())

    async def _write(self, key: str, value: bytes | None, ttl: float | None,
                     last: int | None) -> int:
        headers: dict[str, str] = {}
        if value is None:
            headers[OP] = "del"
        if ttl is not None:
            headers[TTL] = repr(float(ttl))
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        ack = await self._store._publish(self._subject(key), value or b"", headers,
                                         self._stream)
        return int(ack.seq)

    async def _cas(self, key: str, value: bytes | None, ttl: float | None,
                   last: int, expect: int | None) -> int:
        """Write if the key's last revision is still `last`; else say what it is now."""
        try:
            return await self._write(key, value, ttl, last)
        except BadRequestError as exc:
            if _wrong_last(exc) is None:
                raise self._store._failed(f"cannot write {key!r}", exc) from exc
            now = await self._last(key)
            if expect is None:  # a create that lost a race
                raise KeyExists(key, now.revision if now else 0) from None
            raise RevisionMismatch(key, expect,
                                   now.revision if self._live(now) and now else None) from None

    async def get(self, key: str) -> KVEntry | None:
        check_key(key)
        entry = await self._last(key)
        return entry if self._live(entry) else None

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        check_key(key)
        data = as_bytes("value", value)
        check_ttl(ttl)
        return await self._write(key, data, ttl, None)

    async def create(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        check_key(key)
        data = as_bytes("value", value)
        check_ttl(ttl)
        last = await self._last(key)
        if last is not None and self._live(last):
            raise KeyExists(key, last.revision)
        if last is not None and last.op == "put":  # expired: its end goes in the history first
            with contextlib.suppress(RevisionMismatch):
                await self._cas(key, None, None, last.revision, last.revision)
            last = await self._last(key)
        return await self._cas(key, data, ttl, last.revision if last else 0, None)

    async def update(self, key: str, value: bytes, *, expect: int,
                     ttl: float | None = None) -> int:
        check_key(key)
        data = as_bytes("value", value)
        check_ttl(ttl)
        last = await self._last(key)
        if not self._live(last) or last is None or last.revision != expect:
            raise RevisionMismatch(key, expect,
                                   last.revision if last is not None and self._live(last)
                                   else None)
        return await self._cas(key, data, ttl, expect, expect)

    async def delete(self, key: str, *, expect: int | None = None) -> int:
        check_key(key)
        if expect is None:
            return await self._write(key, None, None, None)
        last = await self._last(key)
        if not self._live(last) or last is None or last.revision != expect:
            raise RevisionMismatch(key, expect,
                                   last.revision if last is not None and self._live(last)
                                   else None)
        return await self._cas(key, None, None, expect, expect)

    async def _latest(self) -> list[KVEntry]:
        got = await self._store._read_all(self._stream, self._root + ">",
                                          JsDeliver.LAST_PER_SUBJECT)
        return [self._from_msg(m) for m in got]

    async def keys(self, prefix: str = "") -> list[str]:
        return [e.key for e in await self.items(prefix)]

    async def items(self, prefix: str = "") -> list[KVEntry]:
        check_prefix(prefix)
        return sorted((e for e in await self._latest()
                       if e.key.startswith(prefix) and self._live(e)), key=lambda e: e.key)

    async def history(self, key: str) -> list[KVEntry]:
        check_key(key)
        got = await self._store._read_all(self._stream, self._subject(key), JsDeliver.ALL)
        return [self._from_msg(m) for m in got]

    async def revision(self) -> int:
        _, js = self._store._client()
        try:
            info = await js.stream_info(self._stream)
        except _FAILED as exc:
            raise self._store._failed(f"cannot read the bucket {self.name}", exc) from exc
        return int(info.state.last_seq)

    def watch(self, prefix: str = "", *, after_revision: int | None = None
              ) -> AsyncGenerator[KVEntry, None]:
        """Changes to keys starting with `prefix`, in revision order, each once. Without
        `after_revision`, live changes count from the server time of this call."""
        check_prefix(prefix)
        self._store._client()
        since = datetime.datetime.now(tz=datetime.UTC)
        return self._changes(prefix, after_revision, since)

    async def _changes(self, prefix: str, after: int | None,
                       since: datetime.datetime) -> AsyncGenerator[KVEntry, None]:
        async def follow() -> str:
            """An ephemeral consumer from just past what was seen (or from the start)."""
            if after is not None:
                name, _ = await self._store._ephemeral(self._stream, self._root + ">",
                                                       JsDeliver.BY_START_SEQUENCE,
                                                       start_seq=after + 1)
            else:
                name, _ = await self._store._ephemeral(self._stream, self._root + ">",
                                                       JsDeliver.BY_START_TIME,
                                                       start_time=since)
            return name

        name = await follow()
        expiring: dict[str, KVEntry] = {}
        pause = 0.0
        try:
            while True:
                wait = 5.0
                if expiring:
                    soonest = min(e.expires or 0.0 for e in expiring.values())
                    wait = max(0.01, min(wait, soonest - time.time()))
                try:
                    if not name:
                        name = await follow()
                    got = await self._store._pull(self._stream, name, 256, wait=wait)
                    pause = 0.0
                except NotFound:  # the server lost it (restarted, or it idled out): again
                    name = ""
                    continue
                except StoreUnavailable:  # the server is away: wait for it, then go on
                    pause = min(max(pause * 2, 0.25), 2.0)
                    await asyncio.sleep(pause)
                    continue
                for msg in got:
                    after = int(msg.metadata.sequence.stream)
                    entry = self._from_msg(msg)
                    if not entry.key.startswith(prefix):
                        continue
                    if entry.op == "put" and entry.expires is not None:
                        expiring[entry.key] = entry
                    else:
                        expiring.pop(entry.key, None)
                    if entry.op == "put" and entry.expires is not None and \
                            entry.expires <= time.time():
                        continue  # already gone: its delete comes below
                    yield entry
                for key, entry in list(expiring.items()):
                    if entry.expires is not None and entry.expires <= time.time():
                        del expiring[key]
                        current = await self._last(key)
                        if current is not None and current.revision == entry.revision:
                            # no later write: record the expiry as a delete, for every watcher
                            with contextlib.suppress(RevisionMismatch, KeyExists):
                                await self._cas(key, None, None, entry.revision, entry.revision)
        finally:
            if name:
                await self._store._forget_consumer(self._stream, name)
