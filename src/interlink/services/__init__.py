"""Services behind the gate: registry, calls, events, memory, taint, audit.
They use only the store contract and never re-check what the gate decided."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
