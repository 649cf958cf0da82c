"""Context taint: per agent and conversation, the join of the labels of everything the hub has
delivered to that agent there (calls, replies, events, memory reads). What the agent then sends
in that conversation carries at least that label, so data cannot be laundered by passing it
through an intermediate agent, through memory or through an event.

Kept in the `taint` bucket (`<agent>/<conversation>`, with a time-to-live) so a hub restart
forgets nothing a flow rule depends on; an in-process cache serves the hot path and holds the
mesh agents in the provenance.
"""

from __future__ import annotations

import json

from ..errors import GateDenied
from ..gate.context import GateContext
from ..gate.stage import deny
from ..labels import BOTTOM, LEVELS, Label
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
        if _decisive(joined) != _decisive(current):  # only what flow rules read is persisted
            await self.kv.put(key, json.dumps(joined.to_dict()).encode(), ttl=self.ttl)

    async def replace(self, agent: str, conversation: str, label: Label) -> None:
        """Set the taint outright (an endorsement or declassification, already authorized)."""
        key = f"{agent}/{conversation}"
        self._cache[key] = label
        await self.kv.put(key, json.dumps(label.to_dict()).encode(), ttl=self.ttl)


def _decisive(label: Label) -> tuple[object, ...]:
    """What flow decisions depend on: level, tags, integrity and outside origins. Which mesh
    agents data passed through is kept in memory only (after a restart, provenance of old
    conversations names only outside origins)."""
    return (label.level, label.tags, label.integrity,
            frozenset(p for p in label.provenance if not p.startswith("agent:")))


class Relabel:
    """`endorse` and `declassify` envelopes (authorized against the sender's grants): the
    hub rewrites the target agent's context label in that conversation, and the gate's audit
    record keeps who did it, why, and the label before and after."""

    def __init__(self, taint: Taint) -> None:
        self.taint = taint

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        before = await self.taint.of(env.target, env.conversation)
        if env.kind == "endorse":
            after = Label(before.level, before.tags, "trusted",
                          before.provenance | {f"endorsed:{env.sender}"})
        else:
            level = env.body.get("level", before.level)
            drop = env.body.get("drop_tags") or []
            if level not in LEVELS or not isinstance(drop, list):
                return deny("commit", "bad_request",
                            f"declassify takes `level` (one of {', '.join(LEVELS)}) and "
                            "`drop_tags` (a list)")
            after = Label(min(level, before.level, key=LEVELS.index),
                          before.tags - {str(t) for t in drop}, before.integrity,
                          before.provenance | {f"declassified:{env.sender}"})
        await self.taint.replace(env.target, env.conversation, after)
        ctx.notes["audit"] = {"before": before.to_dict(), "after": after.to_dict(),
                              "reason": str(env.body.get("reason", ""))[:500]}
        ctx.answer["label"] = after.to_dict()
        return None

    async def deliver(self, ctx: GateContext) -> None:
        return None
