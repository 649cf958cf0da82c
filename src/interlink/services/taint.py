"""Context taint: per agent and conversation, the join of the labels of everything the hub has
delivered to that agent there (calls, replies, events, memory reads). What the agent then sends
in that conversation carries at least that label, so data cannot be laundered by passing it
through an intermediate agent, through memory or through an event.

Kept in the `taint` bucket (`<agent>/<conversation>`, with a time-to-live) so a hub restart
forgets nothing; a small in-process cache serves the hot path.
"""

from __future__ import annotations

import json

from ..labels import BOTTOM, Label
from ..store import KV


class Taint:
    def __init__(self, kv: KV, *, ttl: float) -> None:
        self.kv = kv
        self.ttl = ttl
        self._cache: dict[str, Label] = {}

    async def of(self, agent: str, conversation: str) -> Label:
        key = f"{agent}/{conversation}"
        label = self._cache.get(key)
        if label is None:
            entry = await self.kv.get(key)
            label = Label.parse(json.loads(entry.value)) if entry and entry.value else BOTTOM
            self._cache[key] = label
        return label

    async def add(self, agent: str, conversation: str, label: Label) -> None:
        """`agent` was given data labelled `label` in `conversation`."""
        if label == BOTTOM:
            return
        current = await self.of(agent, conversation)
        joined = current.join(label)
        if joined == current:
            return
        key = f"{agent}/{conversation}"
        self._cache[key] = joined
        if len(self._cache) > 50_000:
            self._cache.clear()
        await self.kv.put(key, json.dumps(joined.to_dict()).encode(), ttl=self.ttl)
