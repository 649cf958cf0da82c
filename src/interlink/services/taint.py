"""Context taint: the join of the labels of everything the hub has delivered to an agent
(calls, replies, progress, events, memory reads and watches, through any edge). Whatever the
agent sends afterwards carries at least that label, so data cannot be laundered by passing it
through an intermediate agent, memory or an event.

Taint is **sticky per agent**: a compromised agent chooses its own conversation ids, so what it
was given in one conversation must follow it into every other. It is lowered only by a granted,
audited act (an operator's `interlink agent clear-taint`, `endorse` / `declassify`) or by an
expiry the operator configured (`hub.taint_expiry_seconds`). An agent whose runtime starts each
conversation from a clean context may be given `taint_scope: conversation` in mesh.yaml (the
operator's statement); its output then carries only what it was given in that conversation.

Kept in the `taint` bucket: `<agent>` (everything, for every agent) and, for conversation-scoped
agents, `<agent>/<conversation>` (with `hub.taint_ttl_seconds`). An in-process cache serves the
hot path and holds the mesh agents in the provenance.
"""

from __future__ import annotations

import json
import time

from ..errors import GateDenied
from ..gate.context import GateContext
from ..gate.stage import deny
from ..labels import BOTTOM, LEVELS, Label
from ..policy import PolicyFile
from ..store import KV

CACHE_LIMIT = 50_000


class Taint:
    def __init__(self, kv: KV, policy: PolicyFile) -> None:
        self.kv = kv
        self.policy = policy
        self._cache: dict[str, tuple[Label, float]] = {}  # key -> (label, expires at)

    def scope(self, agent: str) -> str:
        grants = self.policy.current().agents.get(agent)
        return grants.taint_scope if grants is not None else "agent"

    def _keys(self, agent: str, conversation: str) -> list[tuple[str, float | None]]:
        """The keys a delivery to `agent` in `conversation` grows, with their time-to-live."""
        settings = self.policy.current().hub
        keys: list[tuple[str, float | None]] = [(agent, settings.taint_expiry_seconds)]
        if self.scope(agent) == "conversation":
            keys.append((f"{agent}/{conversation}", settings.taint_ttl_seconds))
        return keys

    def _key(self, agent: str, conversation: str) -> str:
        """The key whose label `agent`'s output in `conversation` carries."""
        return f"{agent}/{conversation}" if self.scope(agent) == "conversation" else agent

    async def _read(self, key: str) -> Label:
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        entry = await self.kv.get(key)
        label = Label.parse(json.loads(entry.value)) if entry and entry.value else BOTTOM
        self._remember(key, label)
        return label

    def _remember(self, key: str, label: Label) -> None:
        if len(self._cache) > CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (label, time.time() + 1.0 if self.policy.current().hub
                            .taint_expiry_seconds else float("inf"))

    async def of(self, agent: str, conversation: str) -> Label:
        """The taint `agent`'s output in `conversation` carries."""
        return await self._read(self._key(agent, conversation))

    async def of_agent(self, agent: str) -> Label:
        """Everything `agent` was given, in every conversation (what `interlink agents` shows)."""
        return await self._read(agent)

    async def add(self, agent: str, conversation: str, label: Label) -> None:
        """`agent` was given data labelled `label` in `conversation`."""
        if label == BOTTOM or not agent:
            return
        for key, ttl in self._keys(agent, conversation):
            current = await self._read(key)
            joined = current.join(label)
            if joined == current:
                continue
            self._remember(key, joined)
            if _decisive(joined) != _decisive(current):  # only what flow rules read is kept
                await self.kv.put(key, json.dumps(joined.to_dict()).encode(), ttl=ttl)

    async def replace(self, agent: str, conversation: str, label: Label) -> None:
        """Set the taint outright (an endorsement or declassification, already authorized)."""
        key = self._key(agent, conversation)
        ttl = dict(self._keys(agent, conversation)).get(key)
        self._remember(key, label)
        await self.kv.put(key, json.dumps(label.to_dict()).encode(), ttl=ttl)

    async def clear(self, agent: str) -> Label:
        """Forget everything `agent` was given (an operator's act, audited by the caller);
        returns what it was."""
        before = await self.of_agent(agent)
        for key in [agent, *await self.kv.keys(f"{agent}/")]:
            self._cache.pop(key, None)
            if await self.kv.get(key) is not None:
                await self.kv.delete(key)
        return before


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
        ctx.audit_detail = {"before": before.to_dict(), "after": after.to_dict(),
                              "reason": str(env.body.get("reason", ""))[:500]}
        ctx.answer["label"] = after.to_dict()
        return None

    async def deliver(self, ctx: GateContext) -> None:
        return None
