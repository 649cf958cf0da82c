"""One agent's connection to its hub: handshake, signed envelopes, calls, reconnection.

The connection signs every envelope with the agent's key, waits for the gate's verdict on each,
verifies the origin signature of everything delivered to it, and survives a dropped connection
or a restarted hub: it reconnects with backoff, says hello again, and re-sends what was not yet
answered (calls keep their ids, so the hub attaches the retry to the original call and never
runs it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import frames
from ..envelope import (
    HUB,
    body_data,
    call_body,
    check_signature,
    child_traceparent,
    event_body,
    new_id,
    new_traceparent,
    seal,
)
from ..errors import (
    CallError,
    CallTimeout,
    ConnectionLost,
    GateDenied,
    InputRequired,
    InterlinkError,
    SkillFailed,
    UsageError,
)
from ..identity import Credential, CredentialFile
from ..logs import logged
from ..tasks import Tasks
from ._events import Event, Subscription
from ._memory import MemoryEntry, MemoryWatch, StaleRevision
from ._transport import Socket, Transport, WebSocket
from ._transport import reason as _reason

log = logging.getLogger("interlink.sdk")

LIVE_BACKLOG = 10_000
"""Events a live subscription holds for a reader that is slower than its publishers. Past it
the SDK stops the hub's push, drops what is still in flight, and subscribes again from the
first event it did not keep once the reader is down to half: memory stays bounded, and the
reader still sees every event once, in order (read back from the hub's log). A durable
subscription needs none of this: the hub sends it at most `event_max_inflight` unacked."""

REPLACED = 4000
"""The close code the hub uses when a newer connection of the same agent takes over."""

RESULT_GRACE = 5.0
"""How long after the hub's deadline a caller waits for the hub's own verdict."""

CallHandler = Callable[[dict[str, Any], Credential], Coroutine[Any, Any, None]]
ProgressHandler = Callable[[dict[str, Any]], Any]


@dataclass(eq=False)
class _PendingCall:
    fields: dict[str, Any]
    result: asyncio.Future[Any]
    deadline: float
    timeout: float
    on_progress: ProgressHandler | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)
    """The reply's effective label, as the hub computed it."""


@dataclass(frozen=True)
class Reply:
    """A call's answer with what it carries: `value` (what `call` returns), `labels` (its
    effective label as the hub computed it: level, tags, integrity, provenance) and the call's
    id. What `call_with_labels` returns."""

    value: Any
    labels: dict[str, Any]
    call_id: str


@dataclass(eq=False)
class _SubState:
    """What the SDK needs to subscribe again after a reconnect and resume without a gap."""

    stream: Subscription
    pattern: str
    options: dict[str, Any]
    next_seq: int | None = None
    """Live subscriptions: the log sequence to resume from."""
    hub_id: str | None = None
    paused: bool = False
    """A live subscription whose reader fell `LIVE_BACKLOG` events behind: the hub's push is
    stopped until the reader has caught up, then it resumes from `next_seq` (from the log)."""


@dataclass(eq=False)
class _WatchState:
    """A memory watch, renewed after a reconnect from the last revision it delivered."""

    stream: MemoryWatch
    after_revision: int | None = None
    hub_id: str | None = None
    conversation: str | None = None


class Connection:
    """The transport under `Agent` and `connect()`. States: new → open → closed."""

    def __init__(self, credential: CredentialFile, *, url: str | list[str] | None = None,
                 card: dict[str, Any] | None = None, on_call: CallHandler | None = None,
                 reconnect: bool = True, connect_timeout: float = 10.0,
                 transport: Transport | None = None,
                 labels: dict[str, Any] | None = None,
                 home: Path | None = None) -> None:
        self.credential = credential
        self.agent = credential.credential.agent
        self.urls = hub_urls(url, credential, home)
        """Where the hub may be reached, tried in turn (a dead hub's agents move to the next)."""
        self.url = self.urls[0]
        self.card = card or {"name": self.agent}
        self.on_call = on_call
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.transport = transport
        self.labels = labels or {}
        self.max_envelope_bytes: int | None = None
        """The hub's envelope size limit (from its challenge): larger ones are refused here."""
        self.refusal: GateDenied | None = None
        """Why the hub refused to take this connection back after it dropped (e.g. the agent
        was suspended), if it did."""
        self._private = credential.private()
        self._hub_key = credential.hub_key()
        self._ws: Socket | None = None
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._calls: dict[str, _PendingCall] = {}
        self._outbox: dict[str, dict[str, Any]] = {}  # envelopes to resend until answered
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._state = "new"
        self.live_backlog = LIVE_BACKLOG
        self._handlers = Tasks(log, f"{self.agent}'s connection")
        """Skills and deliveries being handled: ended when the connection closes."""
        self._subs: dict[str, _SubState] = {}
        self._sub_by_hub_id: dict[str, _SubState] = {}
        self._watches: dict[str, _WatchState] = {}
        self._watch_by_hub_id: dict[str, _WatchState] = {}
        self.reconnects = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self, *, wait: bool = False) -> None:
        """Connect and say hello. With `wait`, a hub that cannot be reached yet is waited for
        (retrying with backoff, saying so); a refusal (a credential this hub did not issue, a
        suspended or removed agent) raises GateDenied at once either way."""
        if self._state != "new":
            raise UsageError(f"this connection is {self._state}; make a new one")
        self._state = "open"
        backoff = 0.2
        try:
            while True:
                try:
                    await self._handshake()
                    break
                except ConnectionLost as exc:
                    if not wait:
                        raise
                    log.warning("%s: waiting for the hub at %s (%s); retrying in %.1fs",
                                self.agent, self.url, exc.reason_short, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        except BaseException:
            self._state = "closed"
            self._closed.set()
            raise
        self._reader = asyncio.ensure_future(self._run())

    async def wait_closed(self) -> None:
        """Until this connection ends for good (closed, or the hub refused to take it back:
        then `refusal` says why)."""
        await self._closed.wait()

    async def aclose(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._closed.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._handlers.aclose()
        if self._ws is not None:
            with logged(log, f"{self.agent}: closing the socket"):
                await self._ws.aclose()
        lost = ConnectionLost("the connection was closed")
        for future in [*self._acks.values(), *(c.result for c in self._calls.values())]:
            if not future.done():
                future.set_exception(lost)
        self._acks.clear()
        self._calls.clear()
        streams: list[Subscription | MemoryWatch] = [
            *(s.stream for s in self._subs.values()), *(w.stream for w in self._watches.values())]
        for stream in streams:
            stream.closed = True
            stream.queue.put_nowait(None)
        self._subs.clear()
        self._watches.clear()

    @property
    def pending_calls(self) -> int:
        """Calls made on this connection that have not ended yet."""
        return len(self._calls)

    @property
    def is_open(self) -> bool:
        return self._state == "open" and self._ready.is_set()

    async def _handshake(self) -> None:
        """Connect to the current URL, else each of the others in turn."""
        failure: ConnectionLost | None = None
        start = self.urls.index(self.url) if self.url in self.urls else 0
        for i in range(len(self.urls)):
            self.url = self.urls[(start + i) % len(self.urls)]
            try:
                await self._handshake_one()
                return
            except ConnectionLost as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _handshake_one(self) -> None:
        try:
            opening = (self.transport() if self.transport is not None
                       else WebSocket.open(self.url))
            ws = await asyncio.wait_for(opening, self.connect_timeout)
        except (TimeoutError, ConnectionLost) as exc:
            reason = str(exc) if isinstance(exc, ConnectionLost) else _reason(exc)
            lost = ConnectionLost(f"cannot reach the hub at {self.url} ({reason}): is "
                                  "`interlink serve` running, and is the URL right?")
            lost.reason_short = reason
            raise lost from exc
        try:
            await self._greet(ws)
        except (TimeoutError, ConnectionLost, ValueError, KeyError,
                AttributeError) as exc:  # the hub died mid-handshake, or garbled it
            with logged(log, f"{self.agent}: closing a half-open socket"):
                await ws.aclose()
            lost = ConnectionLost(f"the hub at {self.url} did not finish the handshake "
                                  f"({_reason(exc)})")
            lost.reason_short = "handshake cut short"
            raise lost from exc

    async def _greet(self, ws: Any) -> None:
        """Answer the hub's challenge with a signed hello and wait for its verdict."""
        try:
            challenge = frames.read(json.loads(
                await asyncio.wait_for(ws.recv(), self.connect_timeout)))
        except ValueError:  # not JSON, or not a frame
            challenge = None
        if challenge is None or challenge["op"] != "challenge":
            await ws.aclose()
            raise ConnectionLost(f"{self.url} did not greet like an Interlink hub")
        limit = challenge.get("max_envelope_bytes")
        self.max_envelope_bytes = limit if isinstance(limit, int) and limit > 0 else None
        hello = self._seal({
            "id": new_id(), "kind": "hello", "sender": self.agent, "target": HUB,
            "conversation": new_id(), "traceparent": new_traceparent(),
            "body": {"credential": self.credential.credential.model_dump(),
                     "challenge": challenge["challenge"], "card": self.card,
                     "serves": self.on_call is not None}})
        await ws.send(json.dumps(hello))
        while True:
            answer = json.loads(await asyncio.wait_for(ws.recv(), self.connect_timeout))
            if answer.get("id") == hello["id"]:
                break
        if answer.get("op") != "accepted":
            await ws.aclose()
            raise GateDenied.from_dict(answer.get("error") or {})
        self._ws = ws
        self._ready.set()

    async def _run(self) -> None:
        backoff = 0.05
        while self._state == "open":
            ws = self._ws
            assert ws is not None
            try:
                async for text in ws:
                    self._on_frame(json.loads(text))
            except ConnectionLost:
                pass
            except Exception:
                log.exception("%s: reading from the hub failed", self.agent)
            self._ready.clear()
            self._fail_unsafe(ConnectionLost(
                "the connection to the hub dropped while this request was in flight; it "
                "may or may not have been applied: read back, then retry"))
            if self._state != "open":
                return
            if ws.close_code == REPLACED:
                log.warning("%s: another connection of this agent took over; this one stops "
                            "(%s)", self.agent, ws.close_reason)
                await self._fail_all(ConnectionLost("replaced by a newer connection of "
                                                    f"{self.agent}"))
                self._state = "closed"
                self._closed.set()
                return
            if not self.reconnect:
                await self._fail_all(ConnectionLost("the hub closed the connection"))
                return
            while self._state == "open":
                await asyncio.sleep(backoff * (1 + random.random()))
                try:
                    await self._handshake()
                except GateDenied as exc:
                    log.error("%s: the hub refused to take us back: %s", self.agent, exc)
                    self.refusal = exc
                    await self._fail_all(exc)
                    self._state = "closed"
                    self._closed.set()
                    return
                except (TimeoutError, ConnectionLost, OSError) as exc:
                    backoff = min(backoff * 2, 2.0)
                    log.info("%s: hub unreachable, retrying in ~%.1fs (%s)", self.agent,
                             backoff, exc)
                    continue
                except Exception:  # whatever it was, the reconnecting must go on
                    backoff = min(backoff * 2, 2.0)
                    log.exception("%s: reconnecting failed; retrying in ~%.1fs", self.agent,
                                  backoff)
                    continue
                backoff = 0.05
                self.reconnects += 1
                try:
                    await self._resend()
                except Exception:  # the new connection dropped too: the loop notices
                    log.warning("%s: re-sending after a reconnect failed", self.agent,
                                exc_info=True)
                break

    def _fail_unsafe(self, exc: Exception) -> None:
        """Requests that are not re-sent after a reconnect (a memory write could apply twice)
        fail at once instead of waiting for their timeout."""
        for env_id, future in list(self._acks.items()):
            if env_id not in self._outbox and not future.done():
                future.set_exception(exc)

    async def _fail_all(self, exc: Exception) -> None:
        for future in [*self._acks.values(), *(c.result for c in self._calls.values())]:
            if not future.done():
                future.set_exception(exc)

    async def _resend(self) -> None:
        """After a reconnect: subscriptions first (so acks find them), then everything
        unanswered, re-signed, with its old id."""
        for state in list(self._subs.values()):
            fields = self._subscribe_fields(state)
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._acks[fields["id"]] = answer
            await self._send_fields(fields)
            self._spawn(self._renewed(fields["id"], answer, f"subscribe to {state.pattern}",
                                      self._subs, state.stream))
        for watch in list(self._watches.values()):
            fields = self._watch_fields(watch)
            answer = asyncio.get_running_loop().create_future()
            self._acks[fields["id"]] = answer
            await self._send_fields(fields)
            self._spawn(self._renewed(
                fields["id"], answer,
                f"watch {watch.stream.namespace}/{watch.stream.prefix}", self._watches,
                watch.stream))
        for fields in list(self._outbox.values()):
            await self._send_fields(fields)
        for pending in list(self._calls.values()):
            if pending.fields["id"] not in self._outbox:
                await self._send_fields(pending.fields)

    # -- sending -----------------------------------------------------------------------------

    def _seal(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.labels and "labels" not in fields:
            fields = {**fields, "labels": self.labels}
        return seal(fields, self._private)

    async def _send_fields(self, fields: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or not self._ready.is_set():
            return  # sent again on reconnect
        text = json.dumps(self._seal(fields), separators=(",", ":"))
        if self.max_envelope_bytes and len(text.encode()) > self.max_envelope_bytes:
            # the hub would refuse it (and a frame far over the limit closes the socket, so a
            # re-send after the reconnect would loop): refuse it here, at once, with the reason
            self._outbox.pop(fields["id"], None)
            waiting = self._acks.get(fields["id"])
            if waiting is not None and not waiting.done():
                waiting.set_exception(GateDenied(
                    "decode", "too_large",
                    f"the envelope is {len(text.encode())} bytes; this hub accepts at most "
                    f"{self.max_envelope_bytes}. Send large content by reference, or raise "
                    "hub.max_envelope_bytes", "hub.max_envelope_bytes"))
            return
        with contextlib.suppress(ConnectionLost):
            await ws.send(text)

    async def send_raw(self, text: str) -> None:
        """Send a frame as is (for tests of the hub's handling of bad input)."""
        assert self._ws is not None
        await self._ws.send(text)

    async def request(self, fields: dict[str, Any], *, durable: bool = True,
                      timeout: float = 30.0) -> dict[str, Any]:
        """Send an envelope and wait for the gate's verdict; GateDenied if refused. Durable
        envelopes are re-sent after a reconnect until the hub answers."""
        if self._state != "open":
            if self.refusal is not None:  # e.g. suspended: say so, not just "closed"
                raise self.refusal
            raise ConnectionLost(f"the connection is {self._state}")
        env_id = fields["id"]
        if not durable and not self._ready.is_set():
            # not re-sent after a reconnect, so it waits for the connection to be back first
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                raise ConnectionLost(f"the hub was unreachable for {timeout:.0f}s") from None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[env_id] = future
        if durable:
            self._outbox[env_id] = fields
        try:
            await self._send_fields(fields)
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise ConnectionLost(f"the hub did not answer envelope {env_id} within "
                                 f"{timeout:.0f}s") from exc
        finally:
            self._acks.pop(env_id, None)
            self._outbox.pop(env_id, None)
        if answer.get("op") == "refused":
            raise GateDenied.from_dict(answer.get("error") or {})
        return answer

    # -- calls -------------------------------------------------------------------------------

    async def call(self, agent: str, skill: str, data: Any = None, *, timeout: float = 30.0,
                   call_id: str | None = None, conversation: str | None = None,
                   parent: str | None = None, hops: int = 0, traceparent: str | None = None,
                   on_progress: ProgressHandler | None = None,
                   on_accepted: Callable[[dict[str, Any]], Any] | None = None,
                   message: dict[str, Any] | None = None,
                   delegation: str | None = None) -> Any:
        """Call `agent.skill` with `data` and return its output (`call_with_labels` also gives
        the reply's label).

        Raises GateDenied if the hub refused the call (with the rule), CallTimeout if no answer
        came in time, SkillFailed if the skill raised. Retrying with the same `call_id` never
        runs the skill twice: it returns the first call's outcome. `on_accepted` hears the
        hub's acceptance; `message` sends a whole A2A message (all its parts) instead of `data`.
        """
        reply = await self.call_with_labels(
            agent, skill, data, timeout=timeout, call_id=call_id, conversation=conversation,
            parent=parent, hops=hops, traceparent=traceparent, on_progress=on_progress,
            on_accepted=on_accepted, message=message, delegation=delegation)
        return reply.value

    async def call_with_labels(self, agent: str, skill: str, data: Any = None, *,
                               timeout: float = 30.0, call_id: str | None = None,
                               conversation: str | None = None, parent: str | None = None,
                               hops: int = 0, traceparent: str | None = None,
                               on_progress: ProgressHandler | None = None,
                               on_accepted: Callable[[dict[str, Any]], Any] | None = None,
                               message: dict[str, Any] | None = None,
                               delegation: str | None = None) -> Reply:
        """Like `call`, returning the output with the reply's effective label (`Reply`)."""
        call_id = call_id or new_id()
        if (same := self._calls.get(call_id)) is not None:  # the same call, already on its way
            value = await asyncio.shield(same.result)
            return Reply(value, same.labels, call_id)
        deadline = time.time() + timeout
        fields: dict[str, Any] = {
            "id": call_id, "kind": "call", "sender": self.agent, "target": f"{agent}.{skill}",
            "conversation": conversation or call_id, "parent": parent, "hops": hops,
            "traceparent": child_traceparent(traceparent) if traceparent else new_traceparent(),
            "deadline": round(deadline, 6),
            "body": {"message": message} if message is not None else call_body(data, call_id)}
        if delegation is not None:  # acting for another agent, with the token it gave us
            fields["body"] = {**fields["body"], "delegation": delegation}
        loop = asyncio.get_running_loop()
        pending = _PendingCall(fields, loop.create_future(), deadline, timeout, on_progress)
        self._calls[call_id] = pending
        try:
            answer = await self.request(fields)
            if on_accepted is not None:
                on_accepted(answer)
            while True:
                wait = pending.deadline + RESULT_GRACE - time.time()
                try:
                    value = await asyncio.wait_for(asyncio.shield(pending.result),
                                                   max(wait, 0.01))
                    return Reply(value, pending.labels, call_id)
                except TimeoutError:
                    if time.time() >= pending.deadline + RESULT_GRACE:
                        raise CallTimeout("timeout", f"no answer from the hub for {agent}.{skill} "
                                          f"within {timeout:.1f}s (+{RESULT_GRACE:.0f}s grace)",
                                          call_id=call_id) from None
        finally:
            self._calls.pop(call_id, None)

    async def reply(self, call: dict[str, Any], body: dict[str, Any]) -> None:
        """Answer a delivered call (durably: re-sent after a reconnect until the hub answers)."""
        fields = {
            "id": new_id(), "kind": "reply", "sender": self.agent, "target": call["sender"],
            "conversation": call["conversation"], "parent": call["id"],
            "hops": call.get("hops", 0), "traceparent": child_traceparent(call["traceparent"]),
            "body": body}
        try:
            await self.settling(fields, timeout=60.0)
        except GateDenied as exc:  # the hub fails the call for its caller, saying why
            if exc.code == "duplicate_reply":
                return  # re-sent after a reconnect: the hub already had it
            log.error("%s: the hub refused our reply to call %s: %s", self.agent, call["id"],
                      exc)

    async def settling(self, fields: dict[str, Any], *, durable: bool = True,
                       timeout: float = 30.0) -> dict[str, Any]:
        """`request` for envelopes that settle admitted work (replies, acks): a retriable
        refusal (the hub's control rate limit) is retried with backoff, not dropped."""
        delay = 0.05
        for attempt in range(8):
            try:
                return await self.request(fields, durable=durable, timeout=timeout)
            except GateDenied as exc:
                if exc.code != "rate_limited" or attempt == 7:
                    raise
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def progress(self, call: dict[str, Any], note: str | None = None,
                       extend: float | None = None,
                       artifact: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if note is not None:
            body["note"] = note
        if extend is not None:
            body["extend"] = extend
        if artifact is not None:
            body["artifact"] = artifact
        return await self.request({
            "id": new_id(), "kind": "progress", "sender": self.agent, "target": call["sender"],
            "conversation": call["conversation"], "parent": call["id"],
            "hops": call.get("hops", 0), "traceparent": child_traceparent(call["traceparent"]),
            "body": body}, durable=False)

    # -- events ------------------------------------------------------------------------------

    async def publish(self, topic: str, data: Any = None, *, event_id: str | None = None,
                      conversation: str | None = None, parent: str | None = None,
                      hops: int = 0, traceparent: str | None = None) -> dict[str, Any]:
        """Publish an event; returns the hub's answer once it is committed (`seq`,
        `topic_seq`, `duplicate`). Re-sent with the same id after a reconnect, so a publish
        lost in flight is never stored twice."""
        event_id = event_id or new_id()
        return await self.request({
            "id": event_id, "kind": "publish", "sender": self.agent, "target": topic,
            "conversation": conversation or event_id, "parent": parent, "hops": hops,
            "traceparent": child_traceparent(traceparent) if traceparent else new_traceparent(),
            "body": event_body(data, event_id)})

    async def relabel(self, kind: str, agent: str, conversation: str,
                      **body: Any) -> dict[str, Any]:
        """`endorse` or `declassify` `agent`'s context in `conversation` (needs the grant)."""
        fields = self._control(kind, agent, body)
        fields["conversation"] = conversation
        return await self.request(fields, durable=False)

    async def approve(self, call_id: str, *, approve: bool = True, reason: str = ""
                      ) -> dict[str, Any]:
        """Decide on a call held for approval (needs an `approve` grant for its target)."""
        return await self.request(self._control("approve", call_id, {
            "decision": "approve" if approve else "refuse", "reason": reason}), durable=False)

    async def delegate(self, to: str, rights: list[str], *, ttl: float = 3600.0,
                       from_token: str | None = None) -> str:
        """A token letting agent `to` call `rights` (agent.skill) for this agent — or, with
        `from_token`, passing on part of a delegation this agent holds; the hub refuses
        anything wider than what this agent has (or was given)."""
        body: dict[str, Any] = {"rights": rights, "ttl": ttl}
        if from_token is not None:
            body["from_token"] = from_token
        answer = await self.request(self._control("delegate", to, body), durable=False)
        return str(answer["token"])

    async def register_schema(self, topic: str, schema: dict[str, Any]) -> dict[str, Any]:
        """Register (a new version of) `topic`'s JSON Schema; GateDenied if incompatible."""
        return await self.request(self._control("schema", topic, {"schema": schema}),
                                  durable=False)

    async def subscribe(self, pattern: str, *, durable: str | None = None,
                        deliver: str | None = None, from_seq: int | None = None,
                        since: float | None = None, ack_wait: float | None = None,
                        max_deliver: int | None = None) -> Subscription:
        """Subscribe to `pattern` (see `Mesh.subscribe`); GateDenied if refused."""
        options = {k: v for k, v in {
            "durable": durable, "deliver": deliver, "from_seq": from_seq, "since": since,
            "ack_wait": ack_wait, "max_deliver": max_deliver}.items() if v is not None}
        key = new_id()
        state = _SubState(Subscription(self, key, pattern, durable,
                                       backlog=self.live_backlog), pattern, options)
        self._subs[key] = state
        try:
            await self._send_subscribe(state)
        except BaseException:
            self._subs.pop(key, None)
            raise
        return state.stream

    def _control(self, kind: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": new_id(), "kind": kind, "sender": self.agent, "target": target,
                "conversation": new_id(), "traceparent": new_traceparent(), "body": body}

    def _subscribe_fields(self, state: _SubState) -> dict[str, Any]:
        state.paused = False
        options = dict(state.options)
        if state.stream.durable is None and state.next_seq is not None:
            options.pop("since", None)
            options["from_seq"] = state.next_seq  # resume exactly after the last event seen
        fields = self._control("subscribe", state.pattern, options)
        if state.hub_id is not None:
            self._sub_by_hub_id.pop(state.hub_id, None)
        state.hub_id = fields["id"]
        self._sub_by_hub_id[fields["id"]] = state
        return fields

    async def _send_subscribe(self, state: _SubState) -> None:
        answer = await self.request(self._subscribe_fields(state), durable=False)
        if state.next_seq is None and "start" in answer:
            state.next_seq = int(answer["start"])

    async def _renewed(self, env_id: str, answer: asyncio.Future[dict[str, Any]],
                       what: str, streams: dict[str, Any], stream: Any) -> None:
        """Wait for the hub's verdict on a subscription or watch renewed after a reconnect;
        if it is refused, end the stream (its iterator stops) and say why."""
        try:
            frame = await asyncio.wait_for(answer, 30.0)
        except (TimeoutError, InterlinkError) as exc:
            frame = dict(frames.refused(None, None, {"stage": "sdk", "code": "no_answer",
                                                      "reason": repr(exc)}))
        finally:
            self._acks.pop(env_id, None)
        if frame.get("op") == "refused":
            log.error("%s: could not %s again after reconnecting: %s", self.agent, what,
                      GateDenied.from_dict(frame.get("error") or {}))
            streams.pop(stream.key, None)
            stream.closed = True
            stream.queue.put_nowait(None)

    async def unsubscribe(self, key: str) -> None:
        state = self._subs.pop(key, None)
        if state is None or state.hub_id is None:
            return
        self._sub_by_hub_id.pop(state.hub_id, None)
        if self.is_open:
            with contextlib.suppress(InterlinkError):
                await self.request(self._control("unsubscribe", state.hub_id, {}), durable=False)

    async def settle_event(self, durable: str, seq: int, action: str, delay: float) -> None:
        """Ack (or nak, term, progress) event `seq` of the durable consumer `durable`."""
        body: dict[str, Any] = {"seq": seq, "action": action}
        if delay:
            body["delay"] = delay
        await self.settling(self._control("ack", durable, body), durable=action != "progress")

    def _on_event(self, frame: dict[str, Any]) -> None:
        state = self._sub_by_hub_id.get(frame.get("sub") or "")
        if state is None:
            return  # a subscription closed a moment ago
        if self._origin(frame) is None:
            log.error("%s: dropped event %s on %s whose origin signature does not verify",
                      self.agent, frame.get("seq"), frame.get("topic"))
            return
        seq = frame.get("seq")
        if state.stream.durable is None and isinstance(seq, int):
            if state.next_seq is not None and seq < state.next_seq:
                return  # seen before the reconnect
            if state.paused:
                return  # read again from the log when the subscription resumes
            if state.stream.queue.qsize() >= self.live_backlog:
                self._pause(state, seq)
                return
            state.next_seq = seq + 1
        state.stream.queue.put_nowait(Event.from_frame(frame, self.settle_event))

    def _pause(self, state: _SubState, seq: int) -> None:
        """The reader is `live_backlog` events behind: stop the hub's push (this event and
        what follows are read again from `seq` when the reader has caught up)."""
        log.warning("%s: the reader of the live subscription to %s is %d events behind; "
                    "the hub's push is paused and resumes from event %d once it catches up",
                    self.agent, state.pattern, state.stream.queue.qsize(), seq)
        state.paused = True
        state.next_seq = seq
        hub_id = state.hub_id
        if hub_id is not None:
            self._sub_by_hub_id.pop(hub_id, None)
            if self.is_open:
                self._spawn(self._quietly(self._control("unsubscribe", hub_id, {})))

        def resume() -> None:
            if state.paused and state.stream.key in self._subs and self.is_open:
                self._spawn(self._send_subscribe(state))
        state.stream.on_drained = resume

    async def _quietly(self, fields: dict[str, Any]) -> None:
        with logged(log, f"{self.agent}: {fields['kind']} {fields['target']}"):
            await self.request(fields, durable=False)

    # -- shared memory -----------------------------------------------------------------------

    async def memory_request(self, namespace: str, op: str, fields: dict[str, Any], *,
                             conversation: str | None = None) -> dict[str, Any]:
        """One memory operation through the gate; StaleRevision when a revision moved."""
        envelope = self._control("memory", namespace, {"op": op, **fields})
        if conversation is not None:
            envelope["conversation"] = conversation
        try:
            return await self.request(envelope, durable=False)
        except GateDenied as exc:
            if exc.code in ("stale_revision", "stale_context"):
                raise StaleRevision(exc.stage, exc.code, exc.reason, exc.rule,
                                    exc.detail) from None
            raise

    def _watch_fields(self, watch: _WatchState) -> dict[str, Any]:
        body: dict[str, Any] = {"op": "watch", "prefix": watch.stream.prefix}
        if watch.after_revision is not None:
            body["after_revision"] = watch.after_revision
        fields = self._control("memory", watch.stream.namespace, body)
        if watch.conversation is not None:  # what it pushes belongs to this conversation
            fields["conversation"] = watch.conversation
        if watch.hub_id is not None:
            self._watch_by_hub_id.pop(watch.hub_id, None)
        watch.hub_id = fields["id"]
        self._watch_by_hub_id[fields["id"]] = watch
        return fields

    async def watch_memory(self, namespace: str, prefix: str,
                           after_revision: int | None, *,
                           conversation: str | None = None) -> MemoryWatch:
        key = new_id()
        watch = _WatchState(MemoryWatch(self, key, namespace, prefix,
                                        backlog=self.live_backlog), after_revision,
                            conversation=conversation)
        self._watches[key] = watch
        try:
            answer = await self.request(self._watch_fields(watch), durable=False)
        except BaseException:
            self._watches.pop(key, None)
            raise
        if watch.after_revision is None:
            watch.after_revision = int(answer["revision"])
        return watch.stream

    async def unwatch_memory(self, key: str) -> None:
        watch = self._watches.pop(key, None)
        if watch is None or watch.hub_id is None:
            return
        self._watch_by_hub_id.pop(watch.hub_id, None)
        if self.is_open:
            with contextlib.suppress(InterlinkError):
                await self.request(self._control("memory", watch.stream.namespace, {
                    "op": "unwatch", "watch": watch.hub_id}), durable=False)

    def _on_memory(self, frame: dict[str, Any]) -> None:
        watch = self._watch_by_hub_id.get(frame.get("watch") or "")
        if watch is None:
            return
        revision = frame.get("revision")
        if not isinstance(revision, int):
            return
        if watch.after_revision is not None and revision <= watch.after_revision:
            return  # delivered before a reconnect
        if watch.stream.queue.qsize() >= self.live_backlog:
            self._pause_watch(watch)  # this change is read again when the watch resumes
            return
        watch.after_revision = revision
        watch.stream.queue.put_nowait(MemoryEntry.from_dict(frame))

    def _pause_watch(self, watch: _WatchState) -> None:
        """Like `_pause` for a memory watch: it resumes after the last revision it kept."""
        log.warning("%s: the reader of the memory watch on %s/%s is %d changes behind; the "
                    "hub's push is paused and resumes after revision %s once it catches up",
                    self.agent, watch.stream.namespace, watch.stream.prefix,
                    watch.stream.queue.qsize(), watch.after_revision)
        hub_id = watch.hub_id
        if hub_id is not None:
            self._watch_by_hub_id.pop(hub_id, None)
            watch.hub_id = None
            if self.is_open:
                self._spawn(self._quietly(self._control("memory", watch.stream.namespace, {
                    "op": "unwatch", "watch": hub_id})))

        def resume() -> None:
            if watch.stream.key in self._watches and watch.hub_id is None and self.is_open:
                self._spawn(self._quietly(self._watch_fields(watch)))
        watch.stream.on_drained = resume

    # -- receiving ---------------------------------------------------------------------------

    def _on_frame(self, frame: Any) -> None:
        """One frame from the hub. A frame this SDK cannot read (a broken or hostile hub) is
        logged and skipped; it never ends the connection or the agent."""
        try:
            self._handle_frame(frames.read(frame))
        except Exception as exc:
            log.warning("%s: skipped a frame from the hub that cannot be read (%r): %.200r",
                        self.agent, exc, frame)

    def _handle_frame(self, frame: frames.Frame) -> None:
        if frame["op"] == "accepted" or frame["op"] == "refused":
            future = self._acks.get(frame.get("id") or "")
            if future is not None and not future.done():
                future.set_result(dict(frame))
        elif frame["op"] == "deliver":
            self._on_deliver(dict(frame))
        elif frame["op"] == "event":
            self._on_event(dict(frame))
        elif frame["op"] == "memory":
            self._on_memory(dict(frame))
        elif frame["op"] == "failed":
            pending = self._calls.get(frame["id"])
            error = frame["error"] or {}
            if pending is not None and not pending.result.done():
                cls = CallTimeout if error.get("code") == "timeout" else CallError
                pending.result.set_exception(cls(error.get("code", "failed"),
                                                 error.get("reason", ""), call_id=frame["id"],
                                                 stage=error.get("stage", "calls")))

    def _origin(self, frame: dict[str, Any]) -> Credential | None:
        """The sender's credential, if it and the envelope's signature verify end to end."""
        wire = frame.get("env") or {}
        try:
            credential = Credential.model_validate(frame.get("origin"))
        except Exception:
            return None
        if credential.problem(self._hub_key, self.credential.credential.hub, time.time()):
            return None
        if credential.agent != wire.get("sender") or not check_signature(wire,
                                                                          credential.key()):
            return None
        return credential

    def _on_deliver(self, frame: dict[str, Any]) -> None:
        wire = frame.get("env") or {}
        origin = self._origin(frame)
        kind = wire.get("kind")
        if origin is None:
            log.error("%s: dropped a delivered %s whose origin signature does not verify",
                      self.agent, kind)
            if kind == "reply":
                self._settle(wire.get("parent"), InterlinkError(
                    "the reply's origin signature does not verify; it was not trusted"))
            return
        if "labels" in frame:  # what the hub says this carries (declared, joined with taint)
            wire = {**wire, "effective_labels": frame["labels"]}
        if kind == "call":
            if self.on_call is None:
                self._spawn(self.reply(wire, {"error": {
                    "stage": "agent", "code": "no_skills",
                    "reason": f"{self.agent} is a client and serves no skills", "rule": None}}))
            else:
                self._spawn(self.on_call(wire, origin))
        elif kind == "reply":
            body = wire.get("body") or {}
            answered = self._calls.get(wire.get("parent") or "")
            if answered is not None and isinstance(frame.get("labels"), dict):
                answered.labels = frame["labels"]
            if body.get("state") == "input_required":
                try:
                    prompt = body_data(body)
                except ValueError:
                    prompt = ""
                self._settle(wire.get("parent"), InputRequired(
                    prompt if isinstance(prompt, str) else json.dumps(prompt),
                    call_id=wire.get("parent")))
            elif "error" in body:
                err = body["error"] or {}
                self._settle(wire.get("parent"), SkillFailed(
                    err.get("code", "skill_error"), err.get("reason", ""),
                    call_id=wire.get("parent"), stage=err.get("stage", "skill")))
            else:
                try:
                    self._settle(wire.get("parent"), None, body_data(body))
                except ValueError as exc:
                    self._settle(wire.get("parent"), SkillFailed(
                        "bad_reply", f"the reply carries no A2A message: {exc}"))
        elif kind == "progress":
            pending = self._calls.get(wire.get("parent") or "")
            if pending is not None:
                body = wire.get("body") or {}
                extend = body.get("extend")
                extra = float(extend) if isinstance(extend, int | float) else pending.timeout
                pending.deadline = max(pending.deadline, time.time() + max(extra, 0.0))
                pending.progress.append(body)
                if pending.on_progress is not None:
                    pending.on_progress(body)

    def _settle(self, call_id: str | None, exc: Exception | None, value: Any = None) -> None:
        pending = self._calls.get(call_id or "")
        if pending is None or pending.result.done():
            return
        if exc is not None:
            pending.result.set_exception(exc)
        else:
            pending.result.set_result(value)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._handlers.spawn(coro)


def hub_urls(url: str | list[str] | None, credential: CredentialFile,
             home: Path | None) -> list[str]:
    """Where to find the hub, first found wins: the URL(s) given (a list, or comma-separated),
    `$INTERLINK_HUB`, the mesh home the credential lives in (its mesh.yaml's host and port, so
    a hub moved to another port is followed), else the URL written when the agent was
    enrolled. A credential names the hub it belongs to; where that hub listens may change."""
    given = url or os.environ.get("INTERLINK_HUB")
    if given:
        urls = given if isinstance(given, list) else given.split(",")
        return [u.strip() for u in urls if u.strip()]
    if home is not None and (home / "mesh.yaml").exists():
        from ..home import MeshHome
        try:
            found = MeshHome(home).hub_url()
        except Exception:  # an unreadable mesh.yaml: fall back to the enrolled URL
            found = None
        if found:
            return [found] + ([credential.hub_url] if credential.hub_url != found else [])
    return [credential.hub_url]
