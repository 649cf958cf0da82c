"""Shared memory as an agent sees it: `Memory` (one namespace), `MemoryEntry`, `MemoryWatch`.

    blog = mesh.memory("blog")
    guide = await blog.get("style-guide")              # MemoryEntry or None
    await blog.update("style-guide", {...}, expect=guide.revision)   # StaleRevision if moved
    async with await blog.watch("") as changes:        # pushed by the hub, resumes on reconnect
        async for change in changes:
            print(change.key, change.revision, change.by, change.value)
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from ..errors import GateDenied

if TYPE_CHECKING:
    from ._streams import Streams


class StaleRevision(GateDenied):
    """A write named a revision (`expect`, or `based_on`) that is no longer current.
    `current` is the key's revision now (0: absent); for `based_on`, `moved` maps each key
    that changed to its revision now."""

    @property
    def current(self) -> int:
        value = self.detail.get("current")
        return value if isinstance(value, int) else 0

    @property
    def moved(self) -> dict[str, int]:
        value = self.detail.get("current")
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class MemoryEntry:
    """One revision of a key: its value and how it got there."""

    namespace: str
    key: str
    value: Any
    revision: int
    by: str | None
    ts: float
    labels: dict[str, Any] = field(default_factory=dict)
    expires: float | None = None
    change: Literal["put", "del"] = "put"
    """For history and watches: `del` when the key was deleted (or its time-to-live ran out)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryEntry:
        return cls(namespace=data["namespace"], key=data["key"], value=data.get("value"),
                   revision=data["revision"], by=data.get("by"), ts=data["ts"],
                   labels=data.get("labels") or {}, expires=data.get("expires"),
                   change=data.get("change", "put"))


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"memory values are JSON; this one is not ({exc})") from None
    return value


class Memory:
    """One shared-memory namespace, read and written through the hub's gate."""

    def __init__(self, connection: Streams, namespace: str, *,
                 conversation: str | None = None) -> None:
        self._connection = connection
        self.namespace = namespace
        self.conversation = conversation
        """The conversation reads and writes belong to (a skill's or event handler's): what
        is read there taints it, and what is written carries its taint."""

    async def _ask(self, op: str, **fields: Any) -> dict[str, Any]:
        return await self._connection.memory_request(
            self.namespace, op, {k: v for k, v in fields.items() if v is not None},
            conversation=self.conversation)

    async def get(self, key: str) -> MemoryEntry | None:
        """The key's value and revision, or None when absent (deleted, expired)."""
        entry = (await self._ask("get", key=key)).get("entry")
        return MemoryEntry.from_dict(entry) if entry else None

    async def put(self, key: str, value: Any, *, ttl: float | None = None,
                  based_on: dict[str, int] | None = None) -> int:
        """Write unconditionally (unless `based_on` moved); returns the new revision."""
        return int((await self._ask("put", key=key, value=_json(value), ttl=ttl,
                                    based_on=based_on))["revision"])

    async def update(self, key: str, value: Any, *, expect: int, ttl: float | None = None,
                     based_on: dict[str, int] | None = None) -> int:
        """Compare-and-swap: write only if the key is still at revision `expect` (0: absent).
        Raises StaleRevision carrying the current revision otherwise."""
        return int((await self._ask("update", key=key, value=_json(value), expect=expect,
                                    ttl=ttl, based_on=based_on))["revision"])

    async def delete(self, key: str, *, expect: int | None = None,
                     based_on: dict[str, int] | None = None) -> int:
        return int((await self._ask("delete", key=key, expect=expect,
                                    based_on=based_on))["revision"])

    async def list(self, prefix: str = "") -> list[MemoryEntry]:
        """Live entries whose key starts with `prefix`, sorted by key."""
        answer = await self._ask("list", prefix=prefix)
        return [MemoryEntry.from_dict(e) for e in answer["entries"]]

    async def history(self, key: str) -> builtins.list[MemoryEntry]:
        """The key's kept revisions, oldest first (deletes included)."""
        answer = await self._ask("history", key=key)
        return [MemoryEntry.from_dict(e) for e in answer["entries"]]

    async def watch(self, prefix: str = "", *,
                    after_revision: int | None = None) -> MemoryWatch:
        """Changes to keys starting with `prefix` from now (or after `after_revision`),
        pushed by the hub in revision order, each once, across reconnects."""
        return await self._connection.watch_memory(self.namespace, prefix, after_revision,
                                                   conversation=self.conversation)


class MemoryWatch:
    """A stream of changes; iterate it, close it when done."""

    def __init__(self, connection: Streams, key: str, namespace: str, prefix: str, *,
                 backlog: int = 0) -> None:
        self._connection = connection
        self.key = key
        self.namespace = namespace
        self.prefix = prefix
        self.queue: asyncio.Queue[MemoryEntry | None] = asyncio.Queue()
        """Changes the reader has not taken yet, held to `backlog` (see `LIVE_BACKLOG`)."""
        self.backlog = backlog
        self.on_drained: Callable[[], None] | None = None
        """Set while the hub's push is paused: called once the reader is down to half."""
        self.closed = False

    def __aiter__(self) -> MemoryWatch:
        return self

    async def __anext__(self) -> MemoryEntry:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        change = await self.queue.get()
        if change is None:
            raise StopAsyncIteration
        if self.on_drained is not None and self.queue.qsize() <= self.backlog // 2:
            resume, self.on_drained = self.on_drained, None
            resume()
        return change

    async def get(self, timeout: float | None = None) -> MemoryEntry:
        """The next change (asyncio.TimeoutError after `timeout` seconds)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._connection.unwatch_memory(self.key)
            self.queue.put_nowait(None)

    async def __aenter__(self) -> MemoryWatch:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
