"""Services behind the gate: registry, calls, events, memory, taint, audit.
They use only the store contract and never re-check what the gate decided."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from ..store import Consumer, ConsumerInfo

log = logging.getLogger("interlink.services")


async def quietly(coro: Awaitable[Any]) -> None:
    """Await a best-effort store operation (settling a message that may already be settled);
    a failure is logged, not raised."""
    try:
        await coro
    except Exception as exc:
        log.debug("ignored store error: %r", exc)


async def put_back(consumer: Consumer, info: ConsumerInfo) -> None:
    """Make what an earlier hub process handed out of a durable consumer and nobody settled
    deliverable again at once (its recipients' connections died with that process), ahead of
    newer messages, instead of after the consumer's ack-wait."""
    for seq in range(info.ack_floor + 1, info.delivered_seq + 1):
        await quietly(consumer.nak(seq))
