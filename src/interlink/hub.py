"""The hub: where the gate, the services and the store are put together, once.

    async with Hub(MeshHome(path)) as hub:     # opens the store, continues the audit chain,
        ...                                    # re-arms call deadlines
    app = create_app(home)                     # the ASGI app (`interlink serve` runs it)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from .envelope import BUS_KINDS
from .errors import GateDenied
from .gate import (Authenticate, Authorize, Commit, Decode, Deliver, GateContext, Observe,
                   Pipeline, Service, Session, Validate)
from .home import MeshHome
from .policy import PolicyFile
from .services.audit import AuditLog
from .services.calls import CallService
from .services.events import EVENTS_LOG, SCHEMAS_BUCKET, EventBus
from .services.memory import MEMORY_BUCKET, SharedMemory
from .services.registry import PRESENCE_REFRESH, Registry
from .store import Store, open_store

log = logging.getLogger("interlink.hub")


class HelloService:
    """A hello opens an agent's session: its card goes to the registry, and its calls start
    flowing to it."""

    def __init__(self, registry: Registry, calls: CallService) -> None:
        self.registry = registry
        self.calls = calls

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        return await self.registry.commit(ctx)

    async def deliver(self, ctx: GateContext) -> None:
        await self.registry.deliver(ctx)
        if ctx.session.serves:
            self.calls.connected(ctx.session)
        replaced: Session | None = ctx.notes.get("replaced")
        if replaced is not None and replaced.close is not None:
            replaced.closed = True
            with contextlib.suppress(Exception):
                await replaced.close(4000, "replaced by a newer connection of the same agent")


class Hub:
    def __init__(self, home: MeshHome, *, store_url: str | None = None) -> None:
        home.require()
        self.home = home
        self.key = home.hub_key()
        self.policy = PolicyFile(home.policy_path)
        self.settings = self.policy.policy.hub
        self.store_url = store_url or f"sqlite:///{home.db_path}"
        self.started = time.time()
        self._store: Store | None = None
        self._background: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Hub:
        self.home.db_path.parent.mkdir(parents=True, exist_ok=True)
        store = open_store(self.store_url)
        self._store = await store.__aenter__()
        self.audit = AuditLog(await self._store.log("audit"), self.key)
        await self.audit.open()
        self.registry = Registry(await self._store.kv("registry"))
        self.calls = CallService(await self._store.log("calls"), await self._store.kv("calls"),
                                 self.audit, self.settings, self.registry.session,
                                 self.registry.session_by_id)
        self.events = EventBus(
            await self._store.log(EVENTS_LOG, dedup_window=self.settings.event_dedup_seconds),
            await self._store.kv(SCHEMAS_BUCKET), self.audit, self.settings)
        self.memory = SharedMemory(await self._store.kv(
            MEMORY_BUCKET, history=self.settings.memory_history))
        hello = HelloService(self.registry, self.calls)
        services: dict[str, Service] = {"hello": hello, "call": self.calls, "reply": self.calls,
                    "progress": self.calls,
                    "memory": self.memory,
                    **{kind: self.events for kind in BUS_KINDS}}
        self.gate = Pipeline([
            Decode(self.settings.max_envelope_bytes),
            Authenticate(self.key, skew=self.settings.clock_skew_seconds, started=self.started),
            Authorize(self.policy, self.calls, self.events),
            Validate(self.events, max_event_bytes=self.settings.max_event_bytes,
                     max_memory_value_bytes=self.settings.max_memory_value_bytes),
            Commit(services),
            Deliver(services),
            Observe(self.audit),
        ])
        await self.calls.start()
        await self.events.start()
        from .edges.a2a_remote import RemoteAgents  # edges build on the hub, not the reverse
        self.remotes = RemoteAgents(self)
        self.remotes.sync(self.policy.current())
        await self.audit.append("hub_started", hub=self.key.id, gate=list(self.gate.names))
        self._background = [asyncio.ensure_future(self._housekeeping())]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.remotes.aclose()
        await self.calls.aclose()
        await self.events.aclose()
        await self.memory.aclose()
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self.audit.append("hub_stopped", hub=self.key.id)
                await self.audit.checkpoint()
            await self._store.aclose()
            self._store = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "the hub is not open"
        return self._store

    async def handle(self, raw: bytes, session: Session) -> GateContext:
        """One frame from an edge, through the gate."""
        return await self.gate.run(raw, session)

    async def disconnected(self, session: Session) -> None:
        session.closed = True
        await self.registry.disconnected(session)
        await self.calls.disconnected(session)
        await self.events.disconnected(session)
        await self.memory.disconnected(session)

    async def _housekeeping(self) -> None:
        """Presence refresh, policy reload and periodic audit checkpoints."""
        while True:
            await asyncio.sleep(PRESENCE_REFRESH)
            try:
                await self.registry.refresh_presence()
                self.remotes.sync(self.policy.current())
                await self.audit.checkpoint()
            except Exception:
                log.exception("housekeeping failed; will retry")
