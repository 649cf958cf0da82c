"""Events as an agent sees them: `Event` (with ack/nak), and `Subscription`, an async stream.

    async with await mesh.subscribe("blog.drafts.*", durable="publicist") as sub:
        async for event in sub:
            print(event.topic, event.topic_seq, event.sender, event.data)
            await event.ack()
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..envelope import body_data

if TYPE_CHECKING:
    from ._streams import Streams

Settle = Callable[[str, int, str, float], Awaitable[None]]


@dataclass(eq=False)
class Event:
    """One event delivered to a subscription. `seq` is the event's place in the hub's log,
    `topic_seq` its place in its topic. A durable consumer's events must be settled: `ack()`
    when done, `nak()` to have it again, `term()` to drop it; live subscriptions need none."""

    topic: str
    data: Any
    id: str
    sender: str
    seq: int
    topic_seq: int
    ts: float
    deliveries: int
    durable: str | None
    conversation: str
    labels: dict[str, Any]
    envelope: dict[str, Any]
    dead: dict[str, str] | None = None
    """For a dead letter: why it landed here (`reason`), after how many deliveries, and where
    it came from (`original-seq`, `original-subject`)."""
    _settle: Settle | None = field(default=None, repr=False)
    settled: bool = field(default=False, repr=False)

    @classmethod
    def from_frame(cls, frame: dict[str, Any], settle: Settle | None) -> Event:
        wire = frame["env"]
        try:
            data = body_data(wire.get("body") or {})
        except ValueError:
            data = wire.get("body")
        return cls(topic=frame["topic"], data=data, id=wire["id"], sender=wire["sender"],
                   seq=frame["seq"], topic_seq=frame.get("topic_seq", 0), ts=frame["ts"],
                   deliveries=frame.get("deliveries", 1), durable=frame.get("durable"),
                   conversation=wire.get("conversation", ""),
                   labels=frame.get("labels") or wire.get("labels") or {},
                   envelope=wire, dead=frame.get("dead"), _settle=settle)

    async def ack(self) -> None:
        """Done: the consumer will not deliver this event again."""
        await self._do("ack")

    async def nak(self, delay: float = 0.0) -> None:
        """Not now: deliver it again after `delay` seconds (counts toward max_deliver)."""
        await self._do("nak", delay)

    async def term(self) -> None:
        """Never deliver it again, without processing it."""
        await self._do("term")

    async def in_progress(self) -> None:
        """Still working on it: restart its ack-wait clock."""
        if self.durable is not None and self._settle is not None:
            await self._settle(self.durable, self.seq, "progress", 0.0)

    async def _do(self, action: str, delay: float = 0.0) -> None:
        if self.settled or self.durable is None or self._settle is None:
            return
        self.settled = True
        await self._settle(self.durable, self.seq, action, delay)


class Subscription:
    """A subscription's stream of events; iterate it, and close it when done. It survives a
    lost connection: the SDK subscribes again and resumes where it was."""

    def __init__(self, connection: Streams, key: str, pattern: str,
                 durable: str | None, *, backlog: int = 0) -> None:
        self._connection = connection
        self.key = key
        self.pattern = pattern
        self.durable = durable
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        """What arrived and the reader has not taken yet; a live subscription's is held to
        `backlog` events (see `LIVE_BACKLOG`)."""
        self.backlog = backlog
        self.on_drained: Callable[[], None] | None = None
        """Set while the hub's push is paused: called once the reader is down to half."""
        self.closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        event = await self.queue.get()
        if event is None:
            raise StopAsyncIteration
        if self.on_drained is not None and self.queue.qsize() <= self.backlog // 2:
            resume, self.on_drained = self.on_drained, None
            resume()
        return event

    async def get(self, timeout: float | None = None) -> Event:
        """The next event (asyncio.TimeoutError after `timeout` seconds)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def close(self) -> None:
        """Stop receiving (a durable consumer keeps its place for the next subscriber)."""
        if not self.closed:
            self.closed = True
            await self._connection.unsubscribe(self.key)
            self.queue.put_nowait(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
