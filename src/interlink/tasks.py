"""Background tasks with an owner: kept (a task nobody references can be garbage-collected
mid-flight), their failures logged (never lost in a "Task exception was never retrieved"), and
all of them ended when the owner closes — what `asyncio.TaskGroup` gives a block, for an
object that lives longer than one block (the hub, a service, a connection)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Tasks:
    def __init__(self, log: logging.Logger, owner: str) -> None:
        self._log = log
        self._owner = owner
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start `coro` in the background, owned by this set."""
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("background work of %s failed", self._owner,
                            exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._running)

    async def wait(self) -> None:
        """Let what is running finish (e.g. records still being written at a stop)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel everything still running and wait until it has ended."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
