"""Events: durable topics, wildcard subscriptions, consumer groups, redelivery, dead letters,
topic schemas and replay, behind the gate.

Every event lives in the store's `events` log with its topic as subject, committed before the
publisher is answered, as the publisher signed it (so subscribers check the signature end to
end). The hub numbers events per topic (`topic_seq`) as well as log-wide (`seq`), and drops a
publish retried with the same id within `event_dedup_seconds` (answering with the first one's
numbers).

Subscriptions push; nobody polls:

* **live** (no `durable`): from now, or replayed from a log sequence (`from_seq`) or a point in
  time (`since`); at most once per subscription, and the SDK resumes it from the last sequence
  it saw after a reconnect, so nothing is missed.
* **durable** (`durable="name"`): a store consumer that survives the agent and the hub; it
  resumes after its last acknowledged event. Events must be acked; a nak redelivers at once (or
  after a delay), an event not acked within `ack_wait` is redelivered, and one delivered
  `max_deliver` times goes to `$dead.<name>` with the reason and the delivery count. Several
  agents subscribing with the same durable name form a consumer group: each event goes to one
  of them.

Topic schemas are versioned in the `schemas` bucket; the gate's validate stage checks every
publish against its topic's latest version, and a new version is accepted only if it stays
compatible with the one before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from .. import codec, frames
from ..errors import GateDenied, KeyExists, NotFound, RevisionMismatch, StoreUnavailable
from ..gate.context import GateContext, Session
from ..gate.stage import deny
from ..labels import Label
from ..names import consumer_error, dead_letter_topic, matches
from ..policy import HubSettings, PolicyFile, may_receive
from ..store import KV, Consumer, Log, LogMessage, Store
from . import Outage, quietly, reclaim_held
from .audit import AuditLog
from .schema_compat import check_schema, compatibility_problems
from .taint import Taint

log = logging.getLogger("interlink.events")

EVENTS_LOG = "events"
SCHEMAS_BUCKET = "schemas"
READ_BATCH = 256
ACK_ACTIONS = ("ack", "nak", "term", "progress")



async def events_log(store: Store, settings: HubSettings) -> Log:
    """The mesh's events log, opened with its settings (every opener states the same ones: a
    log's settings are stored for all its users)."""
    keep = settings.event_retention_seconds
    return await store.log(EVENTS_LOG, dedup_window=settings.event_dedup_seconds,
                           max_age=None if keep is None else max(keep,
                                                                 settings.event_dedup_seconds))

@dataclass(eq=False)
class Subscription:
    """One subscriber's subscription on one connection (its id is the subscribe envelope's)."""

    id: str
    session: Session
    pattern: str
    durable: str | None = None
    start: int = 1
    inflight: dict[int, float] = field(default_factory=dict)
    """Durable events handed to this subscriber and not yet settled: seq → when (monotonic)."""
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Group:
    """The subscribers of one durable consumer on this hub, fed by one pump: each event goes
    to the member with the fewest unacknowledged events (in turn, on a tie)."""

    name: str
    consumer: Consumer
    members: list[Subscription] = field(default_factory=list)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    turn: int = 0
    ack_wait: float = 30.0


@dataclass(frozen=True)
class TopicSchema:
    topic: str
    version: int
    schema: dict[str, Any]
    validator: jsonschema.protocols.Validator


class EventBus:
    def __init__(self, log_: Log, schemas: KV, audit: AuditLog, settings: HubSettings,
                 policy: PolicyFile, taint: Taint) -> None:
        self.log = log_
        self.policy = policy
        self.taint = taint
        self.schemas_kv = schemas
        self.audit = audit
        self.settings = settings
        self._topic_last: dict[str, tuple[int, int]] = {}
        """A cache, per topic: the log sequence and topic number of its last event (another
        hub on the same store may have moved on: appends expect it, and re-read on conflict)."""
        self._publish_lock = asyncio.Lock()
        self._schemas: dict[str, TopicSchema] = {}
        self._consumers: dict[str, Consumer] = {}
        self._ack_waits: dict[str, float] = {}
        self._groups: dict[str, Group] = {}
        self._subs: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, alone: bool = True) -> None:
        """Load topic schemas; a hub `alone` on its store makes the events an earlier hub
        process had handed out and nobody settled deliverable now (a hub joining others leaves
        their deliveries alone). Numbering continues from each topic's last event."""
        if alone:
            await reclaim_held(self.log, lambda name: True)
        for entry in await self.schemas_kv.items():
            versions = json.loads(entry.value or b"{}").get("versions") or []
            if versions:
                self._cache_schema(entry.key, versions[-1])

    async def aclose(self) -> None:
        tasks = [s.task for s in self._subs.values() if s.task is not None]
        tasks += [g.task for g in self._groups.values() if g.task is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._subs.clear()

    # -- the gate's questions ----------------------------------------------------------------

    def subscription(self, session: Session, sub_id: str) -> Subscription | None:
        sub = self._subs.get(sub_id)
        return sub if sub is not None and sub.session is session else None

    def holds(self, session: Session, consumer: str) -> bool:
        """Whether this connection subscribes to the durable consumer `consumer`."""
        return any(s.durable == consumer and s.session is session for s in self._subs.values())

    def schema(self, topic: str) -> TopicSchema | None:
        return self._schemas.get(topic)

    # -- commit ------------------------------------------------------------------------------

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        assert ctx.env is not None
        handler = {"publish": self._publish, "subscribe": self._subscribe, "ack": self._ack,
                   "unsubscribe": self._unsubscribe, "schema": self._register}[ctx.env.kind]
        return await handler(ctx)

    async def _publish(self, ctx: GateContext) -> GateDenied | None:
        env, wire, cred = ctx.env, ctx.wire, ctx.credential
        assert env is not None and wire is not None and cred is not None
        topic = env.target
        data = codec.dumps({"wire": wire, "origin": cred.model_dump(),
                            "label": ctx.label.to_dict()})
        async with self._publish_lock:  # in this hub; between hubs, by expect_last
            while True:
                last_seq, n = self._topic_last.get(topic) or await self._last_of(topic)
                n += 1
                try:
                    result = await self.log.append(
                        topic, data, msg_id=f"{env.sender}:{env.id}",
                        headers={"topic_seq": str(n)}, expect_last=last_seq)
                except RevisionMismatch:  # another hub published to it: number after that
                    self._topic_last.pop(topic, None)
                    continue
                if not result.duplicate:
                    self._topic_last[topic] = (result.seq, n)
                break
        if result.duplicate:
            first = (await self.log.read(result.seq, limit=1))[0]
            n = int(first.headers.get("topic_seq", "0"))
            ctx.audit_detail = {"duplicate_of": result.seq}
            topic = first.subject
        ctx.answer.update(seq=result.seq, topic=topic, topic_seq=n,
                          duplicate=result.duplicate)
        return None

    async def _last_of(self, topic: str) -> tuple[int, int]:
        """The log sequence and topic number of the topic's last event, as stored."""
        last = await self.log.last(topic)
        if last is None:
            return 0, 0
        return last.seq, int(last.headers.get("topic_seq", "0"))

    async def _subscribe(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        body = env.body
        durable = body.get("durable")
        problem = _options_problem(body)
        if problem:
            return deny("commit", "bad_request", problem)
        sub = Subscription(id=env.id, session=ctx.session, pattern=env.target, durable=durable)
        if durable is not None:
            existing = {c.name: c for c in await self.log.consumers()}.get(durable)
            if existing is not None and existing.filter != env.target:
                return deny("commit", "consumer_conflict",
                            f"durable consumer {durable!r} follows {existing.filter!r}, not "
                            f"{env.target!r}; pick another name, or subscribe with "
                            f"{existing.filter!r} to join its group")
            ack_wait = float(body.get("ack_wait") or self.settings.event_ack_wait_seconds)
            self._ack_waits[durable] = ack_wait
            consumer = await self.log.consumer(
                durable, filter=env.target, ack_wait=ack_wait,
                max_deliver=int(body.get("max_deliver") or self.settings.event_max_deliver),
                dead_letter=dead_letter_topic(durable), deliver=body.get("deliver") or "all")
            self._consumers[durable] = consumer
            ctx.answer.update(sub=sub.id, durable=durable, created=existing is None)
        else:
            if "from_seq" in body:
                sub.start = max(1, int(body["from_seq"]))
            elif "since" in body:
                sub.start = await self.log.seq_at(float(body["since"]))
            elif body.get("deliver") == "all":
                sub.start = 1
            else:
                sub.start = await self.log.last_seq() + 1
            ctx.answer.update(sub=sub.id, start=sub.start)
        ctx.subscription = sub
        return None

    async def _ack(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        seq, action = env.body.get("seq"), env.body.get("action", "ack")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return deny("commit", "bad_request", "an ack names the event's `seq` (an integer)")
        if action not in ACK_ACTIONS:
            return deny("commit", "bad_request",
                        f"ack action {action!r} is not one of {', '.join(ACK_ACTIONS)}")
        consumer = self._consumers.get(env.target)
        if consumer is None:
            return deny("commit", "unknown_consumer", f"there is no consumer {env.target!r}")
        try:
            if action == "ack":
                await consumer.ack(seq)
            elif action == "term":
                await consumer.term(seq)
            elif action == "progress":
                await consumer.in_progress(seq)
            else:
                delay = env.body.get("delay", 0)
                await consumer.nak(seq, delay=float(delay) if isinstance(delay, int | float)
                                   else 0.0)
        except NotFound:
            return deny("commit", "not_delivered",
                        f"event {seq} was never delivered to consumer {env.target!r} (or it "
                        "was dead-lettered); nothing to " + action)
        group = self._groups.get(env.target)
        if action != "progress" and group is not None:
            for member in group.members:
                member.inflight.pop(seq, None)
            group.room.set()
        return None

    async def _unsubscribe(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        sub = self.subscription(ctx.session, env.target)
        if sub is None:
            return deny("commit", "unknown_subscription",
                        f"this connection has no subscription {env.target!r}")
        await self._end(sub)
        return None

    async def _register(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        topic, schema = env.target, env.body.get("schema")
        if not isinstance(schema, dict):
            return deny("commit", "bad_schema", "a schema envelope carries `schema`, a JSON "
                        "Schema object")
        try:
            check_schema(schema)
        except ValueError as exc:
            return deny("commit", "bad_schema", str(exc))
        for _ in range(8):
            entry = await self.schemas_kv.get(topic)
            versions: list[dict[str, Any]] = (
                json.loads(entry.value or b"{}").get("versions", []) if entry else [])
            if versions and versions[-1]["schema"] == schema:
                ctx.answer.update(topic=topic, version=versions[-1]["version"], unchanged=True)
                return None
            if versions:
                problems = compatibility_problems(versions[-1]["schema"], schema)
                if problems:
                    return deny("commit", "incompatible_schema",
                                f"version {versions[-1]['version'] + 1} of {topic}'s schema is "
                                f"not compatible with version {versions[-1]['version']}: "
                                + "; ".join(problems),
                                "schemas: a new version must accept every event the last "
                                "one did and keep its required fields")
            version = {"version": len(versions) + 1, "schema": schema, "by": env.sender,
                       "ts": round(time.time(), 6)}
            value = json.dumps({"versions": [*versions, version]}).encode()
            try:
                if entry is None:
                    await self.schemas_kv.create(topic, value)
                else:
                    await self.schemas_kv.update(topic, value, expect=entry.revision)
            except (KeyExists, RevisionMismatch):
                continue
            self._cache_schema(topic, version)
            ctx.answer.update(topic=topic, version=version["version"])
            return None
        return deny("commit", "contention", f"the schema of {topic} is changing; retry")

    def _cache_schema(self, topic: str, version: dict[str, Any]) -> None:
        schema = version["schema"]
        self._schemas[topic] = TopicSchema(topic, version["version"], schema,
                                           jsonschema.Draft202012Validator(schema))

    # -- deliver -----------------------------------------------------------------------------

    async def deliver(self, ctx: GateContext) -> None:
        sub: Subscription | None = ctx.subscription
        if sub is None:
            return  # publishes wake the pumps through the store; acks need nothing more
        self._subs[sub.id] = sub
        if sub.durable is None:
            sub.task = asyncio.ensure_future(self._pump_live(sub))
            return
        group = self._groups.get(sub.durable)
        if group is None or group.task is None or group.task.done():
            group = Group(sub.durable, self._consumers[sub.durable],
                          ack_wait=self._ack_waits.get(sub.durable,
                                                       self.settings.event_ack_wait_seconds))
            self._groups[sub.durable] = group
            group.task = asyncio.ensure_future(self._pump_group(group))
        group.members.append(sub)
        group.room.set()

    async def _pump_live(self, sub: Subscription) -> None:
        """Push every matching event from `sub.start` on, then each new one as it lands."""
        next_seq = sub.start
        outage = Outage(f"live subscription {sub.id} on {sub.pattern}")
        try:
            while not sub.session.closed:
                try:
                    last = await self.log.last_seq()
                    batch = await self.log.read(next_seq, subject=sub.pattern,
                                                limit=READ_BATCH)
                except Exception as exc:
                    await outage.survive(exc)
                    continue
                outage.over()
                for message in batch:
                    if matches(sub.pattern, message.subject):
                        try:
                            await self._send(sub, message)
                        except Exception:  # one bad event never stops the subscription
                            log.exception("could not push event %s to subscription %s; "
                                          "skipped", message.seq, sub.id)
                next_seq = batch[-1].seq + 1 if len(batch) == READ_BATCH else max(
                    next_seq, last + 1, batch[-1].seq + 1 if batch else 0)
                if len(batch) < READ_BATCH:
                    with contextlib.suppress(StoreUnavailable):  # the next read says so
                        await self.log.wait_for(next_seq - 1, timeout=5.0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live subscription %s on %s stopped", sub.id, sub.pattern)

    async def _pump_group(self, group: Group) -> None:
        """Hand out a durable consumer's events to its members on this hub, each member holding
        at most `event_max_inflight` unacknowledged events."""
        limit = self.settings.event_max_inflight
        outage = Outage(f"durable consumer {group.name}")
        try:
            while group.members:
                try:
                    await self._hand_out(group, limit)
                except Exception as exc:
                    await outage.survive(exc)
                    continue
                outage.over()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("durable consumer %s stopped handing out events", group.name)
        finally:
            if self._groups.get(group.name) is group:
                del self._groups[group.name]

    async def _hand_out(self, group: Group, limit: int) -> None:
        """One round of `_pump_group`: wait for room, or hand out what the consumer has."""
        room = sum(max(0, limit - len(m.inflight)) for m in group.members)
        if room <= 0:  # backpressure: wait for acks, but never for longer than ack_wait
            group.room.clear()
            try:
                await asyncio.wait_for(group.room.wait(), group.ack_wait)
            except TimeoutError:
                _expire_inflight(group)
            return
        for message in await group.consumer.fetch(min(room, 64), timeout=5.0):
            member = _pick(group, limit)
            if member is None:
                await group.consumer.nak(message.seq)
            elif not matches(member.pattern, message.subject):
                await group.consumer.ack(message.seq)
            else:
                member.inflight[message.seq] = time.monotonic()
                try:
                    await self._send(member, message)
                except Exception:  # one bad event never stops the consumer
                    log.exception("could not hand event %s of %s to a subscriber; it is "
                                  "redelivered after ack-wait", message.seq, group.name)

    async def _send(self, sub: Subscription, message: LogMessage) -> None:
        item = codec.loads(message.data)
        label = Label.parse(item.get("label"))
        agent = sub.session.agent or ""
        refused = may_receive(self.policy.current(), agent, label)
        if refused and refused.code == "suspended":  # kept for it until it is restored
            if sub.durable is not None:
                sub.inflight.pop(message.seq, None)
                await quietly(self._consumers[sub.durable].nak(message.seq, delay=1.0))
            return
        if refused:  # not for this subscriber's eyes: withheld, and audited
            reason, rule = refused.reason, refused.rule
            if sub.durable is not None:
                sub.inflight.pop(message.seq, None)
                await quietly(self._consumers[sub.durable].term(message.seq))
            await self.audit.append("withheld", seq=message.seq, topic=message.subject,
                                    to=agent, stage="label", code=refused.code,
                                    reason=reason, rule=rule)
            return
        await self.taint.add(agent, item["wire"].get("conversation", ""), label)
        dead: dict[str, Any] | None = {k: message.headers[k] for k in  # a dead letter: why
                ("reason", "deliveries", "original-seq", "original-subject")
                if k in message.headers} if "reason" in message.headers else None
        frame = frames.event(
            sub=sub.id, seq=message.seq, topic=message.subject,
            topic_seq=int(message.headers.get("topic_seq", "0")),
            deliveries=message.deliveries or 1, durable=sub.durable, ts=message.ts,
            env=item["wire"], origin=item["origin"], labels=label.to_dict(), dead=dead)
        try:
            await sub.session.send(frame)
        except Exception as exc:
            log.debug("event to %s failed: %r", sub.session.agent, exc)

    # -- connections -------------------------------------------------------------------------

    async def disconnected(self, session: Session) -> None:
        """End a closed connection's subscriptions; what it held unacked goes back at once."""
        for sub in [s for s in self._subs.values() if s.session is session]:
            await self._end(sub)

    async def _end(self, sub: Subscription) -> None:
        self._subs.pop(sub.id, None)
        if sub.task is not None:
            sub.task.cancel()
            await asyncio.gather(sub.task, return_exceptions=True)
        group = self._groups.get(sub.durable or "")
        if group is not None and sub in group.members:
            group.members.remove(sub)
            for seq in sorted(sub.inflight):
                await quietly(group.consumer.nak(seq))
            if not group.members and group.task is not None:
                group.task.cancel()
                await asyncio.gather(group.task, return_exceptions=True)
                self._groups.pop(group.name, None)
        sub.inflight.clear()


def _expire_inflight(group: Group) -> None:
    """Forget events held out longer than the consumer's ack-wait (their acks were lost or
    refused): the store consumer redelivers them, and the pump has room to fetch them again."""
    cutoff = time.monotonic() - group.ack_wait
    for member in group.members:
        for seq in [s for s, at in member.inflight.items() if at <= cutoff]:
            del member.inflight[seq]


def _pick(group: Group, limit: int) -> Subscription | None:
    """The open member with the fewest unacknowledged events; members take turns on a tie."""
    open_members = [m for m in group.members if not m.session.closed and len(m.inflight) < limit]
    if not open_members:
        return None
    group.turn += 1
    n = len(open_members)
    rotated = [open_members[(group.turn + i) % n] for i in range(n)]
    return min(rotated, key=lambda m: len(m.inflight))


def _options_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a subscribe's options, if anything."""
    known = {"durable", "deliver", "from_seq", "since", "ack_wait", "max_deliver"}
    unknown = sorted(set(body) - known)
    if unknown:
        return f"unknown subscribe option(s) {unknown}; known: {sorted(known)}"
    durable = body.get("durable")
    if durable is not None:
        problem = consumer_error(durable)
        if problem:
            return problem
        if "from_seq" in body or "since" in body:
            return ("from_seq/since replay a live subscription; a durable consumer resumes "
                    "after its last ack (use deliver='all' when creating it)")
    if body.get("deliver", "all") not in ("all", "new"):
        return "deliver must be 'all' or 'new'"
    for name, kind in (("from_seq", int), ("since", (int, float)), ("ack_wait", (int, float)),
                       ("max_deliver", int)):
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                  or value <= 0):
            return f"{name} must be a positive number, not {value!r}"
    return None
