"""Shared memory: namespaced JSON values with revisions, compare-and-swap, history, time-to-live
and pushed change notifications, behind the gate.

Every namespace lives in the store's `memory` bucket under `<namespace>/<key>`; a stored value
keeps who wrote it, when, the labels of the envelope that wrote it, and that envelope's id.
Revisions are the bucket's (strictly increasing across the mesh), so a watcher that saw
revision r resumes with every later change, in order, each once.

A memory envelope names its namespace as `target` and its operation in `body.op`:

    get {key}                       → {"entry": {...} | null}
    list {prefix}                   → {"entries": [...]}           (live keys, sorted)
    history {key}                   → {"entries": [...]}           (oldest first, deletes too)
    put {key, value, ttl?, based_on?}                → {"revision"}
    update {key, value, expect, ttl?, based_on?}     → {"revision"}  expect=0: only if absent
    delete {key, expect?, based_on?}                 → {"revision"}
    watch {prefix, after_revision?} → {"watch", "revision"}, then {"op": "memory", ...} frames
    unwatch {watch}

`expect` refuses a stale write with the key's current revision (`stale_revision`); `based_on`
({key: revision} across the namespace) refuses a write made from a picture of the namespace
that is no longer true (`stale_context`, with every key that moved).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .. import frames
from ..errors import GateDenied, KeyExists, RevisionMismatch, StoreUnavailable
from ..gate.context import GateContext, Session
from ..gate.stage import deny
from ..labels import Label
from ..names import MEMORY_WRITES
from ..policy import PolicyFile, may_receive
from ..store import KV, KVEntry
from . import Outage
from .taint import Taint

log = logging.getLogger("interlink.memory")

MEMORY_BUCKET = "memory"
LIST_LIMIT = 1000


@dataclass(eq=False)
class Watch:
    id: str
    session: Session
    namespace: str
    prefix: str
    conversation: str = ""
    task: asyncio.Task[None] | None = None


def entry_dict(namespace: str, entry: KVEntry) -> dict[str, Any]:
    """An entry as agents see it: the value and everything known about how it got there."""
    stored = json.loads(entry.value) if entry.value else {}
    return {"namespace": namespace, "key": entry.key.partition("/")[2],
            "revision": entry.revision, "change": entry.op, "value": stored.get("value"),
            "by": stored.get("by"), "ts": entry.ts, "labels": stored.get("labels") or {},
            "expires": entry.expires, "envelope": stored.get("envelope")}


class SharedMemory:
    def __init__(self, kv: KV, policy: PolicyFile, taint: Taint) -> None:
        self.kv = kv
        self.policy = policy
        self.taint = taint
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._watches: dict[str, Watch] = {}

    async def aclose(self) -> None:
        for watch in list(self._watches.values()):
            await self._end(watch)

    def watch(self, session: Session, watch_id: str) -> Watch | None:
        watch = self._watches.get(watch_id)
        return watch if watch is not None and watch.session is session else None

    # -- commit ------------------------------------------------------------------------------

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        op = env.body["op"]
        if op in MEMORY_WRITES:
            async with self._locks[env.target]:  # based_on checks and the write are one step
                return await self._write(ctx, op)
        read: Callable[[GateContext], Awaitable[GateDenied | None]] = getattr(self, f"_{op}")
        return await read(ctx)

    async def _get(self, ctx: GateContext) -> GateDenied | None:
        ns, body = _target(ctx)
        entry = await self.kv.get(f"{ns}/{body['key']}")
        readable, withheld = await self._give(ctx, ns, [entry] if entry else [])
        if withheld:
            return withheld[0]
        ctx.answer["entry"] = readable[0] if readable else None
        return None

    async def _list(self, ctx: GateContext) -> GateDenied | None:
        ns, body = _target(ctx)
        entries = await self.kv.items(f"{ns}/{body.get('prefix', '')}")
        readable, withheld = await self._give(ctx, ns, entries[:LIST_LIMIT])
        ctx.answer.update(entries=readable, truncated=len(entries) > LIST_LIMIT,
                          withheld=len(withheld))
        return None

    async def _history(self, ctx: GateContext) -> GateDenied | None:
        ns, body = _target(ctx)
        readable, withheld = await self._give(
            ctx, ns, await self.kv.history(f"{ns}/{body['key']}"))
        ctx.answer.update(entries=readable, withheld=len(withheld))
        return None

    async def _give(self, ctx: GateContext, ns: str, entries: list[KVEntry]
                    ) -> tuple[list[dict[str, Any]], list[GateDenied]]:
        """The entries the reader is cleared for (its taint grows by their labels), and a
        refusal for each it is not."""
        env = ctx.env
        assert env is not None
        policy = self.policy.current()
        readable, withheld = [], []
        for entry in entries:
            item = entry_dict(ns, entry)
            label = Label.parse(item["labels"]) if item["labels"] else Label()
            refused = may_receive(policy, env.sender, label)
            if refused:
                withheld.append(deny("label", refused.code,
                                     f"{ns}/{item['key']}: {refused.reason} "
                                     f"({label.describe()})", refused.rule))
                continue
            await self.taint.add(env.sender, env.conversation, label)
            readable.append(item)
        return readable, withheld

    async def _watch(self, ctx: GateContext) -> GateDenied | None:
        ns, body = _target(ctx)
        after = body.get("after_revision")
        current = await self.kv.revision()
        ctx.watch = Watch(ctx.env.id if ctx.env else "", ctx.session, ns,
                                   body.get("prefix", ""),
                                   ctx.env.conversation if ctx.env else "")
        ctx.watch_after = current if after is None else after
        ctx.answer.update(watch=ctx.env.id if ctx.env else None, revision=current)
        return None

    async def _unwatch(self, ctx: GateContext) -> GateDenied | None:
        _, body = _target(ctx)
        watch = self.watch(ctx.session, str(body.get("watch")))
        if watch is None:
            return deny("commit", "unknown_watch",
                        f"this connection has no watch {body.get('watch')!r}")
        await self._end(watch)
        return None

    async def _write(self, ctx: GateContext, op: str) -> GateDenied | None:
        ns, body = _target(ctx)
        env = ctx.env
        assert env is not None
        key = f"{ns}/{body['key']}"
        based_on: dict[str, int] = body.get("based_on") or {}
        moved: dict[str, int] = {}
        for other, revision in based_on.items():
            entry = await self.kv.get(f"{ns}/{other}")
            now_at = entry.revision if entry else 0
            if now_at != revision:
                moved[other] = now_at
        if moved:
            said = ", ".join(f"{k} is at revision {v} (you read {based_on[k]})"
                             for k, v in moved.items())
            return deny("commit", "stale_context",
                        f"this write was based on a picture of {ns} that is no longer true: "
                        f"{said}. Read again, rethink, and write with the new revisions",
                        detail={"current": moved})
        expect = body.get("expect")
        ttl = body.get("ttl")
        try:
            if op == "delete":
                revision = await self.kv.delete(key, expect=expect)
            else:
                value = json.dumps({"value": body["value"], "by": env.sender,
                                    "labels": ctx.label.to_dict(), "ts": round(time.time(), 6),
                                    "envelope": env.id}, separators=(",", ":")).encode()
                if op == "put":
                    revision = await self.kv.put(key, value, ttl=ttl)
                elif expect == 0:
                    revision = await self.kv.create(key, value, ttl=ttl)
                else:
                    assert isinstance(expect, int)  # validate refuses an update without one
                    revision = await self.kv.update(key, value, expect=expect, ttl=ttl)
        except (RevisionMismatch, KeyExists) as exc:
            current = exc.current
            return deny("commit", "stale_revision",
                        f"{ns}/{body['key']} is at revision {current or 'none (absent)'}, not "
                        f"{expect if expect else 'absent'}: someone wrote it since you read it. "
                        "Read it again and retry with the current revision",
                        detail={"current": current or 0})
        ctx.answer["revision"] = revision
        return None

    # -- deliver -----------------------------------------------------------------------------

    async def deliver(self, ctx: GateContext) -> None:
        watch: Watch | None = ctx.watch
        if watch is None or ctx.watch_after is None:
            return
        self._watches[watch.id] = watch
        watch.task = asyncio.ensure_future(self._push(watch, ctx.watch_after))

    async def _push(self, watch: Watch, after: int) -> None:
        """Send every change under the watch's prefix after `after`, in revision order (an
        outage of the store pauses it; it goes on from the last change sent)."""
        outage = Outage(f"memory watch {watch.id} on {watch.namespace}/{watch.prefix}")
        while not watch.session.closed:
            try:
                after = await self._push_from(watch, after, outage)
                return
            except StoreUnavailable as exc:
                await outage.wait(exc)

    async def _push_from(self, watch: Watch, after: int, outage: Outage) -> int:
        changes = self.kv.watch(f"{watch.namespace}/{watch.prefix}", after_revision=after)
        try:
            async for entry in changes:
                outage.over()
                if watch.session.closed:
                    return after
                after = entry.revision
                item = entry_dict(watch.namespace, entry)
                label = Label.parse(item["labels"]) if item["labels"] else Label()
                if may_receive(self.policy.current(), watch.session.agent or "", label):
                    continue  # not cleared for it: the watcher does not see this change
                await self.taint.add(watch.session.agent or "", watch.conversation, label)
                frame = frames.memory(watch.id, item)
                try:
                    await watch.session.send(frame)
                except Exception as exc:
                    log.debug("memory change to %s failed: %r", watch.session.agent, exc)
                    return after
        except (asyncio.CancelledError, StoreUnavailable):
            raise
        except Exception:
            log.exception("watch %s on %s/%s stopped", watch.id, watch.namespace, watch.prefix)
        finally:
            await changes.aclose()  # type: ignore[attr-defined]
        return after

    async def disconnected(self, session: Session) -> None:
        for watch in [w for w in self._watches.values() if w.session is session]:
            await self._end(watch)

    async def _end(self, watch: Watch) -> None:
        self._watches.pop(watch.id, None)
        if watch.task is not None:
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)


def _target(ctx: GateContext) -> tuple[str, dict[str, Any]]:
    assert ctx.env is not None
    return ctx.env.target, ctx.env.body
