"""Services behind the gate: registry, calls, events, memory, taint, audit.
They use only the store contract and never re-check what the gate decided."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import StoreUnavailable
from ..store import Log

log = logging.getLogger("interlink.services")


async def quietly(coro: Awaitable[Any]) -> None:
    """Await a best-effort store operation (settling a message that may already be settled);
    a failure is logged, not raised."""
    try:
        await coro
    except Exception as exc:
        log.debug("ignored store error: %r", exc)


async def reclaim_held(log_: Log, which: Callable[[str], bool]) -> None:
    """At hub start, before anything of this hub fetches: make every delivery that a durable
    consumer `which` accepts handed out and nobody settled deliverable again now (its fetcher
    was an earlier hub process, and its recipients' connections died with it), instead of
    after the consumer's ack-wait. One hub per store: nothing handed out before is in anyone's
    hands now. Consumers are reclaimed together (on JetStream each takes about a second)."""
    held = [c.name for c in await log_.consumers() if which(c.name) and c.ack_pending]

    async def reclaim(name: str) -> None:
        await (await log_.open_consumer(name)).reclaim()

    await asyncio.gather(*(reclaim(name) for name in held))


class Outage:
    """How a service's long-running loop (a dispatcher, an event pump, a watch) rides out its
    store being unreachable: it says so once, waits with backoff, and carries on where it was
    when the store is back, instead of ending (which would leave an agent's calls or events
    stopped until it reconnects)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.pause = 0.0

    async def wait(self, exc: StoreUnavailable) -> None:
        if not self.pause:
            log.warning("%s paused: %s; resuming when the store is back", self.what, exc)
        self.pause = min(max(self.pause * 2, 0.25), 2.0)
        await asyncio.sleep(self.pause)

    async def survive(self, exc: Exception) -> None:
        """After a failed step: wait out an unreachable store; anything else is logged (a bug
        must not leave an agent without its calls or events) and retried after a second."""
        if isinstance(exc, StoreUnavailable):
            await self.wait(exc)
            return
        log.error("%s failed; trying again in a second", self.what, exc_info=exc)
        await asyncio.sleep(1.0)

    def over(self) -> None:
        if self.pause:
            log.warning("%s resumed", self.what)
            self.pause = 0.0
