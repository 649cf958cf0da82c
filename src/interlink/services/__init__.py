"""Services behind the gate: registry, calls, events, memory, taint, containment, audit.
They use only the store contract and never re-check what the gate decided."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger("interlink.services")


async def quietly(coro: Awaitable[Any]) -> None:
    """Await a best-effort store operation (settling a message that may already be settled);
    a failure is logged, not raised."""
    try:
        await coro
    except Exception as exc:
        log.debug("ignored store error: %r", exc)
