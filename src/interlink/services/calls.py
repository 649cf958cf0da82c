"""Calls: durable request/response between agents, behind the gate.

A call's life, in the store:

* **commit**: a record `calls/<id>` is created in the `calls` bucket (state `pending`, with its
  deadline), and the call envelope is appended to the `calls` log under `call.<target>` with
  the call id as message id. Only then is the caller answered `accepted`. A second call with the
  same id (a retry) does not run again: it is attached to the first, and gets its result.
* **deliver**: while the target is connected, a dispatcher reads the durable consumer
  `to-<target>` and hands each pending call to the agent (state `delivered`). A call to an
  offline agent waits in the log until the agent connects or the deadline passes. A dropped
  connection puts its unanswered calls back (nak), so they are delivered again on reconnect;
  after a hub restart, calls that were out for delivery are put back the same way.
* **reply**: the callee's reply moves the record to `done` (or `failed`) by compare-and-swap,
  acknowledges the log message and is delivered to the caller. A reply to a call that already
  timed out is fenced off: refused to the callee, never delivered as if current, and audited.
* **progress**: the callee reports progress; the deadline moves out (`extend` seconds, by
  default the call's own timeout) and the caller sees the progress note.
* **timeout**: at the deadline an unfinished call becomes `timeout` (compare-and-swap, so it
  races safely with a late reply); the caller gets a clear timeout error.

Finished records are kept `keep_results_seconds` so that retries get the stored outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from pydantic import BaseModel

from .. import codec, frames
from ..envelope import ENVELOPE_ID
from ..errors import GateDenied, KeyExists, RevisionMismatch
from ..gate.context import GateContext, Session, send_after_run
from ..gate.stage import deny
from ..labels import Label
from ..policy import HubSettings
from ..store import KV, Consumer, Log, LogMessage
from ..tasks import Tasks
from . import Outage, quietly, reclaim_held
from .audit import AuditLog
from .taint import Taint

log = logging.getLogger("interlink.calls")

State = Literal["held", "pending", "delivered", "done", "failed", "timeout"]
TERMINAL = ("done", "failed", "timeout")


class CallRecord(BaseModel):
    id: str
    caller: str
    target: str
    skill: str
    conversation: str
    state: State = "pending"
    created: float
    deadline: float
    timeout: float
    seq: int | None = None
    session: str | None = None
    hops: int = 0
    caller_session: str | None = None
    """The connection the call came from: its reply goes back there (else to the caller's
    serving connection)."""
    deliveries: int = 0
    reply: dict[str, Any] | None = None
    reply_origin: dict[str, Any] | None = None
    reply_label: dict[str, Any] | None = None
    held: dict[str, Any] | None = None
    """A call waiting for an approver: what to deliver once approved, and why it waits."""
    error: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    """The callee's latest progress note as delivered (wire, origin, label) and the hub that
    took it: a hub serving the caller elsewhere forwards it (see `_followed`)."""
    settled_by: str | None = None
    """The hub that ended the call: it tells the caller if the caller is connected to it;
    another hub serving the caller learns of the end from the bucket (see `_follow`)."""

    def dump(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


SessionLookup = Callable[[str], Session | None]
SessionById = Callable[[str | None], Session | None]


class CallService:
    def __init__(self, log_: Log, kv: KV, audit: AuditLog, settings: HubSettings,
                 sessions: SessionLookup, session_by_id: SessionById, taint: Taint, *,
                 on_outcome: Callable[[str, bool], None] = lambda target, ok: None,
                 suspended: Callable[[str], bool] = lambda agent: False,
                 clock: Callable[[], float] = time.time, hub_id: str = "hub") -> None:
        self.hub_id = hub_id
        """This hub process among the hubs sharing the store (`settled_by`)."""
        self.log = log_
        self.suspended = suspended
        self.taint = taint
        self.on_outcome = on_outcome
        self.session_by_id = session_by_id
        self.kv = kv
        self.audit = audit
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._open: dict[str, set[str]] = {}    # caller -> its unfinished calls
        self._opener: dict[str, str] = {}       # call id -> caller
        self._dispatchers: dict[str, asyncio.Task[None]] = {}
        self._inflight: dict[str, dict[str, int]] = {}  # session id -> call id -> log seq
        self._held_by: dict[str, str] = {}  # call id -> the session it is in flight on
        self._consumers: dict[str, Consumer] = {}
        self._forwarded: dict[str, str] = {}  # call id -> the last progress note forwarded
        self._tasks = Tasks(log, "the call service")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, alone: bool = True, shared: bool = False) -> None:
        """Re-arm deadlines. A hub `alone` on its store also puts back calls that were out for
        delivery when the hub stopped, and every call a dead hub's dispatchers had claimed but
        not yet offered (nothing claimed before this start is in anyone's hands now); a hub
        joining others leaves what they delivered alone. On a `shared` store the hub follows
        the calls bucket, for outcomes other hubs settle and deadlines they armed."""
        if alone:
            await reclaim_held(self.log, lambda name: name.startswith("to-"))
        for entry in await self.kv.items(""):
            try:
                rec = CallRecord.model_validate_json(entry.value or b"{}")
            except ValueError:
                log.error("call record %s is unreadable; skipped", entry.key)
                continue
            if rec.state in TERMINAL:
                continue
            self._arm(rec.id, rec.deadline)
            if not alone:
                continue
            self._opened(rec.id, rec.caller)
            if rec.state == "delivered" and rec.seq is not None:
                consumer = await self._consumer(rec.target)
                await self._cas(rec.id, lambda r: r.model_copy(update={
                    "state": "pending", "session": None}))
                # a call delivered from its commit step may never have been claimed by the
                # dispatcher: its message is then still waiting to be offered, nothing to put
                # back (a nak would be refused: never delivered)
                await quietly(consumer.nak(rec.seq))
        if shared:
            self._spawn(self._follow())

    async def _follow(self) -> None:
        """Calls other hubs changed: a new unfinished one gets a deadline here too (should its
        hub die, someone still times it out: the compare-and-swap lets one win); one another
        hub ended is told to its caller if the caller is connected here."""
        after: int | None = None  # live changes first; after a failure, from where it was
        outage = Outage("following the calls of other hubs")
        while True:
            try:
                async for entry in self.kv.watch("", after_revision=after):
                    after = entry.revision
                    outage.over()
                    if entry.value:
                        await self._followed(CallRecord.model_validate_json(entry.value))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await outage.survive(exc)

    async def _followed(self, rec: CallRecord) -> None:
        if rec.state not in TERMINAL:
            if rec.id not in self._timers:
                self._arm(rec.id, rec.deadline)
            note = rec.progress
            if note and note.get("by") != self.hub_id and isinstance(note.get("wire"), dict):
                note_id = note["wire"].get("id")
                caller = self.session_by_id(rec.caller_session)
                if caller is not None and self._forwarded.get(rec.id) != note_id:
                    self._forwarded[rec.id] = note_id
                    label = Label.parse(note.get("label"))
                    await self.taint.add(caller.agent or rec.caller, rec.conversation, label)
                    await _send(caller, frames.deliver(note["wire"], note.get("origin"),
                                                       label.to_dict()))
            return
        self._forwarded.pop(rec.id, None)
        if rec.settled_by == self.hub_id:
            return  # this hub ended it and told the caller itself
        self._disarm(rec.id)
        self._closed(rec.id)
        counted = rec.error is None or (rec.error.get("stage"), rec.error.get("code")) not in (
            ("calls", "suspended"), ("calls", "not_enrolled"), ("approval", "denied"))
        if counted:  # every hub's breakers count every outcome, wherever it was settled
            self.on_outcome(rec.target, rec.state == "done")
        caller = self.session_by_id(rec.caller_session)
        if caller is not None and not caller.closed:
            await self._send_outcome(rec, caller)

    async def aclose(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        dispatchers = list(self._dispatchers.values())
        for task in dispatchers:
            task.cancel()
        await asyncio.gather(*dispatchers, return_exceptions=True)
        self._dispatchers.clear()
        await self._tasks.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro)

    async def _consumer(self, agent: str) -> Consumer:
        consumer = self._consumers.get(agent)
        if consumer is None:
            consumer = await self.log.consumer(
                f"to-{agent}", filter=f"call.{agent}", ack_wait=60.0,
                max_deliver=self.settings.call_max_deliver, dead_letter=f"dead.call.{agent}")
            self._consumers[agent] = consumer
        return consumer

    # -- the gate's questions ----------------------------------------------------------------

    async def record(self, call_id: str) -> CallRecord | None:
        return await self._get(call_id)

    # -- commit ------------------------------------------------------------------------------

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        if env.kind == "call":
            return await self._commit_call(ctx)
        if env.kind == "approve":
            return await self._commit_approval(ctx)
        if env.kind == "reply":
            return await self._commit_reply(ctx)
        return await self._commit_progress(ctx)

    async def _commit_call(self, ctx: GateContext) -> GateDenied | None:
        env, wire = ctx.env, ctx.wire
        assert env is not None and wire is not None and ctx.credential is not None
        now = self.clock()
        target, skill = env.call_target()
        wanted = (env.deadline - now) if env.deadline else self.settings.call_timeout_seconds
        if wanted <= 0:
            return deny("commit", "deadline_passed",
                        "the call's deadline is already in the past; give it more time")
        if wanted < self.settings.min_call_timeout_seconds:
            return deny("commit", "deadline_too_short",
                        f"the call's deadline is {wanted:.3f}s away; the hub needs at least "
                        f"{self.settings.min_call_timeout_seconds:g}s "
                        "(hub.min_call_timeout_seconds)")
        timeout = min(wanted, self.settings.max_call_timeout_seconds)
        rec = CallRecord(id=env.id, caller=env.sender, target=target, skill=skill,
                         conversation=env.conversation, created=now, deadline=now + timeout,
                         timeout=timeout, caller_session=ctx.session.id, hops=env.hops)
        entry = await self.kv.get(env.id)
        if entry is not None and entry.value:
            existing = CallRecord.model_validate_json(entry.value)
            if (existing.caller, existing.target, existing.skill) != (env.sender, target, skill):
                return deny("commit", "id_in_use",
                            f"call id {env.id} is already used by another call; use a new id")
            ctx.retry = existing
            ctx.audit_detail = {"retry_of": existing.id, "state": existing.state}
            ctx.answer.update(state=existing.state, deadline=existing.deadline, retry=True)
            if existing.state not in TERMINAL:
                if existing.caller_session != ctx.session.id:  # the caller reconnected
                    await self._cas(env.id, lambda r: r.model_copy(update={
                        "caller_session": ctx.session.id}))
                if existing.state != "held":  # a held call waits for its approver, retried
                    await self._append(env.id, target, wire, ctx.credential.model_dump(),
                                       ctx.label.to_dict())
            return None
        hold = ctx.hold
        if hold:
            rec = rec.model_copy(update={"state": "held", "held": {
                "wire": wire, "origin": ctx.credential.model_dump(),
                "label": ctx.label.to_dict(), "rule": hold}})
        try:
            await self.kv.create(env.id, rec.dump())
        except KeyExists:  # a concurrent retry got there first: treat this one as the retry
            return await self._commit_call(ctx)
        self._opened(env.id, env.sender)
        if hold:
            ctx.audit_detail = {"held": hold, "label": ctx.label.to_dict()}
        else:
            ctx.call_seq = await self._append(
                env.id, target, wire, ctx.credential.model_dump(), ctx.label.to_dict())
        self._arm(env.id, rec.deadline)
        ctx.answer.update(state=rec.state, deadline=rec.deadline)
        return None

    async def _commit_approval(self, ctx: GateContext) -> GateDenied | None:
        """An approver agent's decision on a held call (see `decide`)."""
        env = ctx.env
        assert env is not None
        approved = env.body.get("decision") == "approve"
        reason = str(env.body.get("reason", ""))[:500]
        problem = await self.decide(env.target, approved, by=env.sender, reason=reason)
        if problem is not None:
            return deny("commit", "not_held", problem)
        ctx.audit_detail = {"call": env.target, "approved": approved, "reason": reason}
        return None

    async def decide(self, call_id: str, approved: bool, *, by: str,
                     reason: str = "") -> str | None:
        """Decide a held call: approved, it goes on (its label now says who vouched for it);
        refused, the caller is told why. Why it cannot be decided, or None."""
        record = await self._get(call_id)
        if record is None or record.state != "held" or record.held is None:
            return (f"call {call_id} is not waiting for approval "
                    f"({record.state if record else 'unknown'})")
        held = record.held
        error = {"stage": "approval", "code": "denied", "rule": held.get("rule"),
                 "reason": f"{by} refused this call" + (f": {reason}" if reason else "")}
        done = await self._cas(call_id, lambda r: r.model_copy(update=(
            {"state": "pending", "held": None} if approved else
            {"state": "failed", "held": None, "error": error, "settled_by": self.hub_id}))
            if r.state == "held" else None)
        if done is None:
            return f"call {call_id} was decided meanwhile"
        if approved:
            label = Label.parse(held["label"])
            label = Label(label.level, label.tags, "trusted",
                          label.provenance | {f"approved:{by}"})
            await self._append(call_id, record.target, held["wire"], held["origin"],
                               label.to_dict())
        else:
            self._disarm(call_id)
            caller = self._caller(record, record.caller)
            if caller is not None:
                self._spawn(_send(caller, {"op": "failed", "id": call_id, "error": error}))
        return None

    async def held(self) -> list[CallRecord]:
        """Calls waiting for an approver."""
        return [r for r in (CallRecord.model_validate_json(e.value or b"{}")
                            for e in await self.kv.items("")) if r.state == "held"]

    async def _append(self, call_id: str, target: str, wire: dict[str, Any],
                      origin: dict[str, Any], label: dict[str, Any]) -> int:
        """Put the call on its target's log (what the target's dispatcher offers); its seq."""
        data = codec.dumps({"wire": wire, "origin": origin, "label": label})
        return (await self.log.append(f"call.{target}", data, msg_id=call_id)).seq

    async def _commit_reply(self, ctx: GateContext) -> GateDenied | None:
        env, wire = ctx.env, ctx.wire
        assert env is not None and wire is not None and env.parent and ctx.credential
        failed = "error" in env.body
        for _ in range(8):
            entry = await self.kv.get(env.parent)
            if entry is None or not entry.value:
                return deny("commit", "unknown_call", f"call {env.parent} is no longer known")
            rec = CallRecord.model_validate_json(entry.value)
            if rec.state == "timeout":
                ctx.audit_detail = {"fenced": True, "timed_out_at": rec.deadline}
                return deny("commit", "late_reply",
                            f"call {rec.id} timed out at {rec.deadline:.3f}, before this reply "
                            f"came ({self.clock() - rec.deadline:.1f}s late); the caller was "
                            "told it timed out, so this reply is fenced off and not delivered")
            if rec.state in TERMINAL:
                return deny("commit", "duplicate_reply", f"call {rec.id} was already answered")
            done = rec.model_copy(update={
                "state": "failed" if failed else "done", "reply": wire,
                "settled_by": self.hub_id,
                "reply_origin": ctx.credential.model_dump(),
                "reply_label": ctx.label.to_dict(),
                "error": env.body.get("error") if failed else None})
            try:
                await self.kv.update(rec.id, done.dump(), expect=entry.revision,
                                     ttl=self.settings.keep_results_seconds)
            except RevisionMismatch:
                continue
            self._disarm(rec.id)
            self.on_outcome(rec.target, not failed)
            if rec.seq is not None:
                consumer = await self._consumer(rec.target)
                await quietly(consumer.ack(rec.seq))
            self._landed(rec.id)
            ctx.call_record = done
            return None
        return deny("commit", "contention", f"call {env.parent} is changing too fast; retry")

    async def _commit_progress(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None and env.parent
        extend_raw = env.body.get("extend")
        for _ in range(8):
            entry = await self.kv.get(env.parent)
            if entry is None or not entry.value:
                return deny("commit", "unknown_call", f"call {env.parent} is no longer known")
            rec = CallRecord.model_validate_json(entry.value)
            if rec.state in TERMINAL:
                return deny("commit", "late_progress",
                            f"call {rec.id} is already {rec.state}; progress is not delivered")
            extend = rec.timeout if not isinstance(extend_raw, int | float) else float(extend_raw)
            extend = max(0.0, min(extend, self.settings.max_call_timeout_seconds))
            deadline = max(rec.deadline, self.clock() + extend)
            note = {"wire": ctx.wire, "origin": ctx.credential.model_dump()
                    if ctx.credential else None, "label": ctx.label.to_dict(), "by": self.hub_id}
            try:
                await self.kv.update(rec.id, rec.model_copy(update={
                    "deadline": deadline, "progress": note}).dump(), expect=entry.revision)
            except RevisionMismatch:
                continue
            if rec.seq is not None:
                consumer = await self._consumer(rec.target)
                await quietly(consumer.in_progress(rec.seq))
            self._arm(rec.id, deadline)
            ctx.answer["deadline"] = deadline
            ctx.call_record = rec
            return None
        return deny("commit", "contention", f"call {env.parent} is changing too fast; retry")

    # -- deliver -----------------------------------------------------------------------------

    async def deliver(self, ctx: GateContext) -> None:
        env, wire = ctx.env, ctx.wire
        assert env is not None and wire is not None
        if env.kind == "approve":
            return  # an approved call goes out through the target's dispatcher
        if env.kind == "call":
            retry: CallRecord | None = ctx.retry
            if retry is not None and retry.state in TERMINAL:
                self._spawn(self._send_outcome(retry, ctx.session))
            elif retry is None and ctx.call_seq is not None:
                await self._deliver_now(ctx, ctx.call_seq)
            return
        caller = self._caller(ctx.call_record, env.target)
        if caller is not None:
            frame = frames.deliver(wire, ctx.credential.model_dump() if ctx.credential else None,
                                   ctx.label.to_dict())
            rec_conv = getattr(ctx.call_record, "conversation", env.conversation)
            # the caller is tainted before the reply reaches it, and both go out with the
            # reply's own verdict under one commit (`send_after_run`)
            await self.taint.add(caller.agent or env.target, rec_conv, ctx.label)
            await _send(caller, frame)

    async def _deliver_now(self, ctx: GateContext, seq: int) -> None:
        """A new call to a connected target goes out from the commit step itself, instead of
        waiting for the target's dispatcher to wake, claim it and read it back. The dispatcher
        stays the safety net: when it claims the message it finds the record delivered to this
        session and only marks the message in progress; after a disconnect or a crash the call
        is put back and offered again exactly as before. A target that is not connected,
        suspended, or whose record moved on meanwhile is left to the dispatcher."""
        env, wire = ctx.env, ctx.wire
        assert env is not None and wire is not None and ctx.credential is not None
        target, _ = env.call_target()
        session = self.sessions(target)
        if (session is None or session.closed or target not in self._dispatchers
                or self.suspended(target)):
            return
        updated = await self._cas(env.id, lambda r: r.model_copy(update={
            "state": "delivered", "session": session.id, "seq": seq, "deliveries": 1})
            if r.state == "pending" else None)
        if updated is not None:
            await self._hand_over(session, updated, seq, 1, wire, ctx.credential.model_dump(),
                                  ctx.label)

    async def _hand_over(self, session: Session, rec: CallRecord, seq: int, attempt: int,
                         wire: dict[str, Any], origin: dict[str, Any], label: Label) -> None:
        """Send a call its record now says is delivered to `session`: remember it for a put-back
        on disconnect, audit it, taint the target with it, and deliver it."""
        self._landed(rec.id)  # handed over again (after a reconnect): one place in flight
        self._inflight.setdefault(session.id, {})[rec.id] = seq
        self._held_by[rec.id] = session.id
        await self.audit.append("delivered", call=rec.id, to=session.agent,
                                session=session.id, attempt=attempt)
        await self.taint.add(session.agent or rec.target, rec.conversation, label)
        await _send(session, frames.deliver(wire, origin, label.to_dict()))

    def _landed(self, call_id: str) -> None:
        """A call is no longer in flight on the session it was handed to (a settled call, or
        one handed over again): found by its id, not by looking through every session."""
        session_id = self._held_by.pop(call_id, None)
        if session_id is not None:
            self._inflight.get(session_id, {}).pop(call_id, None)

    def _caller(self, rec: CallRecord | None, agent: str) -> Session | None:
        """Where a call's outcome goes: the connection that made it, else the caller's serving
        connection (a retry after a reconnect comes from a new connection)."""
        session = self.session_by_id(rec.caller_session) if rec is not None else None
        return session if session is not None else self.sessions(agent)

    async def _send_outcome(self, rec: CallRecord, session: Session) -> None:
        """Tell a caller (again) how a finished call ended."""
        if rec.state == "timeout" or rec.reply is None:
            await _send(session, frames.failed(rec.id, rec.error or {
                "stage": "calls", "code": "timeout", "reason": "the call timed out"}))
        else:  # the stored answer is a delivery like the first: it taints the caller too
            await self.taint.add(session.agent or rec.caller, rec.conversation,
                                 Label.parse(rec.reply_label))
            await _send(session, frames.deliver(rec.reply, rec.reply_origin, rec.reply_label))

    # -- dispatch to connected targets -------------------------------------------------------

    def connected(self, session: Session) -> None:
        agent = session.agent
        assert agent is not None
        old = self._dispatchers.pop(agent, None)
        if old is not None:
            old.cancel()
        self._inflight[session.id] = {}
        self._dispatchers[agent] = asyncio.ensure_future(self._dispatch(agent, session))

    async def disconnected(self, session: Session) -> None:
        """Stop dispatching to a closed session and put its unanswered calls back."""
        agent = session.agent
        inflight = self._inflight.pop(session.id, {})
        for call_id in inflight:
            self._held_by.pop(call_id, None)
        if agent is None:
            return
        task = self._dispatchers.get(agent)
        if task is not None and self.sessions(agent) is None:  # no newer session took over
            task.cancel()
            self._dispatchers.pop(agent, None)
        if not inflight or agent is None:
            return
        consumer = await self._consumer(agent)
        for call_id, seq in inflight.items():
            rec = await self._cas(call_id, lambda r: r.model_copy(update={
                "state": "pending", "session": None}) if r.state == "delivered"
                and r.session == session.id else None)
            if rec is not None:
                await quietly(consumer.nak(seq))

    async def _dispatch(self, agent: str, session: Session) -> None:
        outage = Outage(f"the dispatcher of {agent}'s calls")
        try:
            while not session.closed:
                try:
                    consumer = await self._consumer(agent)
                    claimed = await consumer.fetch(32, timeout=30.0)  # woken by its own calls
                except Exception as exc:
                    await outage.survive(exc)
                    continue
                outage.over()
                offered = 0
                try:
                    for message in claimed:
                        if session.closed:
                            break
                        try:
                            await self._offer(session, consumer, message)
                        except Exception:  # one bad message never stops an agent's calls
                            log.exception("could not offer call message %s to %s; it is put "
                                          "back and retried after ack-wait", message.seq, agent)
                        offered += 1
                finally:  # claimed and not offered (closed, replaced, cancelled): put back now
                    for message in claimed[offered:]:
                        await quietly(consumer.nak(message.seq))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dispatcher for %s stopped", agent)

    async def _offer(self, session: Session, consumer: Consumer, message: LogMessage) -> None:
        item = codec.loads(message.data)
        wire = item["wire"]
        call_id = wire["id"]
        rec = await self._get(call_id)
        if rec is None or rec.state in TERMINAL:
            await consumer.ack(message.seq)
            return
        if self.clock() >= rec.deadline:
            await self._expire(call_id)
            return
        if self.suspended(rec.target):  # the kill switch: its skill never sees this call
            await self.fail(call_id, suspended_error(rec.target), target_failed=False)
            await quietly(consumer.ack(message.seq))
            return
        if rec.state == "delivered" and rec.session == session.id:
            if message.deliveries > 1:  # still running after an ack-wait: keep it claimed
                await consumer.in_progress(message.seq)
            return  # the first claim of a call delivered from its commit step: nothing to do
        handed: list[bool] = []

        def claim(r: CallRecord) -> CallRecord | None:
            if r.state in TERMINAL:
                return None
            if r.state == "delivered" and r.session == session.id and r.seq == message.seq:
                handed.append(True)  # its commit step delivered it since we read the record
                return None
            return r.model_copy(update={"state": "delivered", "session": session.id,
                                        "seq": message.seq, "deliveries": message.deliveries})
        updated = await self._cas(call_id, claim)
        if updated is None:
            if not handed:  # finished meanwhile
                await consumer.ack(message.seq)
            return
        await self._hand_over(session, updated, message.seq, message.deliveries, wire,
                              item["origin"], Label.parse(item.get("label")))

    async def fail(self, call_id: str, error: dict[str, Any], *,
                   target_failed: bool = True) -> bool:
        """End a call as failed because the hub refused its reply (e.g. output that does not
        match the skill's schema): the caller hears why instead of waiting for the deadline."""
        rec = await self._cas(call_id, lambda r: r.model_copy(update={
            "state": "failed", "error": error, "held": None, "settled_by": self.hub_id})
            if r.state not in TERMINAL
            else None, ttl=self.settings.keep_results_seconds)
        if rec is None:
            return False
        self._disarm(call_id)
        if target_failed:
            self.on_outcome(rec.target, False)
        if rec.seq is not None:
            consumer = await self._consumer(rec.target)
            await quietly(consumer.ack(rec.seq))
        caller = self._caller(rec, rec.caller)
        if caller is not None:
            await _send(caller, frames.failed(call_id, error))
        return True

    async def fail_all_to(self, agent: str, why: str = "suspended") -> int:
        """Fail every unfinished call to `agent` (it was suspended or removed): their callers
        hear it at once instead of waiting for their deadlines. Returns how many."""
        failed = 0
        for entry in await self.kv.items(""):
            try:
                rec = CallRecord.model_validate_json(entry.value or b"{}")
            except ValueError:
                continue
            if rec.target == agent and rec.state not in TERMINAL:
                if await self.fail(rec.id, suspended_error(agent, why), target_failed=False):
                    failed += 1
        return failed

    # -- deadlines ---------------------------------------------------------------------------

    def open_calls(self, caller: str) -> int:
        """How many unfinished calls `caller` has made."""
        return len(self._open.get(caller, ()))

    def _opened(self, call_id: str, caller: str) -> None:
        self._open.setdefault(caller, set()).add(call_id)
        self._opener[call_id] = caller

    def _closed(self, call_id: str) -> None:
        caller = self._opener.pop(call_id, None)
        if caller is not None:
            self._open.get(caller, set()).discard(call_id)

    def _arm(self, call_id: str, deadline: float) -> None:
        """(Re)start the timer of an open call (it stays open: that is `_disarm`)."""
        handle = self._timers.pop(call_id, None)
        if handle is not None:
            handle.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self.clock())
        self._timers[call_id] = loop.call_later(
            delay, lambda: self._spawn(self._expire(call_id)))

    def _disarm(self, call_id: str) -> None:
        self._closed(call_id)
        handle = self._timers.pop(call_id, None)
        if handle is not None:
            handle.cancel()

    async def _expire(self, call_id: str) -> None:
        self._timers.pop(call_id, None)
        self._closed(call_id)
        now = self.clock()
        rec = await self._get(call_id)
        if rec is None or rec.state in TERMINAL:
            return
        if now < rec.deadline:
            self._arm(call_id, rec.deadline)
            return
        error = {"stage": "calls", "code": "timeout",
                 "reason": f"{rec.target}.{rec.skill} did not answer within {rec.timeout:.1f}s"
                           + (" (it was offline)" if rec.state == "pending" else ""),
                 "rule": None}
        done = await self._cas(call_id, lambda r: r.model_copy(update={
            "state": "timeout", "error": error, "settled_by": self.hub_id})
            if r.state not in TERMINAL
            and now >= r.deadline else None, ttl=self.settings.keep_results_seconds)
        if done is None:
            return
        if rec.seq is not None:
            consumer = await self._consumer(rec.target)
            await quietly(consumer.term(rec.seq))
        if rec.state == "delivered":  # the target had it and did not answer in time
            self.on_outcome(rec.target, False)
        await self.audit.append("timeout", call=call_id, caller=rec.caller, target=rec.target,
                                skill=rec.skill, state_before=rec.state)
        caller = self._caller(rec, rec.caller)
        if caller is not None:
            await _send(caller, frames.failed(call_id, error))

    # -- store helpers -----------------------------------------------------------------------

    async def _get(self, call_id: str) -> CallRecord | None:
        if not isinstance(call_id, str) or not ENVELOPE_ID.fullmatch(call_id):
            return None  # not a call id at all (e.g. an approve naming garbage): no such call
        entry = await self.kv.get(call_id)
        return CallRecord.model_validate_json(entry.value) if entry and entry.value else None

    async def _cas(self, call_id: str, change: Callable[[CallRecord], CallRecord | None],
                   *, ttl: float | None = None) -> CallRecord | None:
        """Apply `change` by compare-and-swap, retrying on contention; None if it declined."""
        for _ in range(16):
            entry = await self.kv.get(call_id)
            if entry is None or not entry.value:
                return None
            new = change(CallRecord.model_validate_json(entry.value))
            if new is None:
                return None
            try:
                await self.kv.update(call_id, new.dump(), expect=entry.revision, ttl=ttl)
            except RevisionMismatch:
                continue
            return new
        raise RuntimeError(f"call {call_id}: too much contention")


def suspended_error(agent: str, why: str = "suspended") -> dict[str, Any]:
    if why != "suspended":
        return {"stage": "calls", "code": "not_enrolled",
                "reason": f"{agent} was {why}: this call will not run",
                "rule": f"agents.{agent}: absent"}
    return {"stage": "calls", "code": "suspended",
            "reason": f"{agent} is suspended: the hub delivers nothing to it, so this call "
                      f"will not run (an operator restores it with `interlink agent restore "
                      f"{agent}`)", "rule": f"agents.{agent}.suspended: true"}


async def _send(session: Session, frame: frames.Frame) -> None:
    if session.closed:
        return
    try:
        await send_after_run(session, frame)
    except Exception as exc:
        log.debug("send to %s failed: %r", session.agent, exc)
