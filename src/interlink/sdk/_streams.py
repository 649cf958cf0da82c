"""Events and shared memory over the wire: publishing, subscriptions (live and durable) and
memory watches that survive a reconnect without a gap, and the bounded backlog that keeps a
slow reader from holding unbounded memory."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from .. import frames
from ..envelope import event_body, new_id
from ..errors import GateDenied, InterlinkError
from ._events import Event, Subscription
from ._memory import MemoryEntry, MemoryWatch, StaleRevision
from ._tracing import outgoing
from ._wire import Wire, log

LIVE_BACKLOG = 10_000
"""Events a live subscription holds for a reader that is slower than its publishers. Past it
the SDK stops the hub's push, drops what is still in flight, and subscribes again from the
first event it did not keep once the reader is down to half: memory stays bounded, and the
reader still sees every event once, in order (read back from the hub's log). A durable
subscription needs none of this: the hub sends it at most `event_max_inflight` unacked."""


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


class Streams(Wire):
    """The subscriptions and memory watches of this connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live_backlog = LIVE_BACKLOG
        self._subs: dict[str, _SubState] = {}
        self._sub_by_hub_id: dict[str, _SubState] = {}
        self._watches: dict[str, _WatchState] = {}
        self._watch_by_hub_id: dict[str, _WatchState] = {}

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
            "traceparent": outgoing(traceparent),
            "body": event_body(data, event_id)})

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

    async def _renew_streams(self) -> None:
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

    def _end_streams(self) -> None:
        streams: list[Subscription | MemoryWatch] = [
            *(s.stream for s in self._subs.values()), *(w.stream for w in self._watches.values())]
        for stream in streams:
            stream.closed = True
            stream.queue.put_nowait(None)
        self._subs.clear()
        self._watches.clear()
