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

from .delegation import mint
from .envelope import BUS_KINDS
from .identity import HubKey
from .errors import GateDenied
from .gate import (Authenticate, Authorize, Commit, Decode, Deliver, GateContext, Observe,
                   Pipeline, Service, Session, Stage, Validate)
from .gate.guard import Guard
from .gate.label import LabelStage
from .home import MeshHome
from .policy import PolicyFile
from .services.audit import AuditLog
from .services.containment import Containment
from .services.taint import Relabel, Taint
from .services.calls import CallService
from .services.events import EVENTS_LOG, SCHEMAS_BUCKET, EventBus
from .services.memory import MEMORY_BUCKET, SharedMemory
from .services.registry import PRESENCE_REFRESH, Registry
from .store import Store, open_store

log = logging.getLogger("interlink.hub")

VIOLATIONS = ("not_granted", "not_cleared", "untrusted_input", "over_classified")
"""Refusals that count toward quarantining the sender."""


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


class Delegations:
    """A `delegate` envelope (authorized: only rights the sender holds) gets a token back."""

    def __init__(self, key: HubKey) -> None:
        self.key = key

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        rights = [(a, s) for a, _, s in (str(r).partition(".") for r in env.body["rights"])]
        ttl = env.body.get("ttl", 3600)
        ttl = float(ttl) if isinstance(ttl, int | float) else 3600.0
        parent = ctx.notes.get("delegation_parent")
        if parent is None:
            ctx.answer["token"] = mint(self.key.private, env.sender, env.target, rights, ttl)
        else:  # passed on: the original delegator stays, the chain grows, expiry only shrinks
            ctx.answer["token"] = mint(self.key.private, parent.delegator, env.target, rights,
                                       ttl, via=(*parent.via, env.sender),
                                       not_after=parent.expires)
            ctx.notes["audit"] = {"delegation": {"chain": [*parent.chain, env.target]}}
        return None

    async def deliver(self, ctx: GateContext) -> None:
        return None


class Hub:
    def __init__(self, home: MeshHome, *, store_url: str | None = None,
                 full_gate: bool = True) -> None:
        home.require()
        self.home = home
        self.key = home.hub_key()
        self.policy = PolicyFile(home.policy_path)
        self.settings = self.policy.policy.hub
        self.store_url = store_url or f"sqlite:///{home.db_path}"
        self.started = time.time()
        self.full_gate = full_gate
        self._store: Store | None = None
        self._background: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Hub:
        self.home.db_path.parent.mkdir(parents=True, exist_ok=True)
        store = open_store(self.store_url)
        self._store = await store.__aenter__()
        self.audit = AuditLog(await self._store.log("audit"), self.key)
        await self.audit.open()
        self.registry = Registry(await self._store.kv("registry"))
        self.taint = Taint(await self._store.kv("taint"), ttl=self.settings.taint_ttl_seconds)
        self.containment = Containment(self.settings)
        self.containment.on_change = self._breaker_changed
        self.calls = CallService(await self._store.log("calls"), await self._store.kv("calls"),
                                 self.audit, self.settings, self.registry.session,
                                 self.registry.session_by_id, self.taint,
                                 on_outcome=self.containment.outcome)
        self.events = EventBus(
            await self._store.log(EVENTS_LOG, dedup_window=self.settings.event_dedup_seconds),
            await self._store.kv(SCHEMAS_BUCKET), self.audit, self.settings, self.policy,
            self.taint)
        self.memory = SharedMemory(await self._store.kv(
            MEMORY_BUCKET, history=self.settings.memory_history), self.policy, self.taint)
        hello = HelloService(self.registry, self.calls)
        services: dict[str, Service] = {
            "hello": hello, "call": self.calls, "reply": self.calls, "progress": self.calls,
            "memory": self.memory, "delegate": Delegations(self.key), "approve": self.calls,
            "endorse": Relabel(self.taint), "declassify": Relabel(self.taint),
            **{kind: self.events for kind in BUS_KINDS}}
        self.gate = Pipeline(self.stages(services, full=self.full_gate),
                             after=[self._after_gate])
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

    def stages(self, services: dict[str, Service], *, full: bool = True) -> list[Stage]:
        """The gate, in order. `full=False` leaves out label, validate and guard (only for
        measuring what they cost: `benchmarks/gate_cost.py`)."""
        settings = self.settings
        checks: list[Stage] = [
            LabelStage(self.policy, self.taint, self.calls),
            Validate(self.events, self.registry, self.calls,
                     max_event_bytes=settings.max_event_bytes,
                     max_memory_value_bytes=settings.max_memory_value_bytes,
                     max_depth=settings.max_depth),
            Guard(self.containment, settings, self.policy, self.calls),
        ] if full else []
        return [
            Decode(settings.max_envelope_bytes),
            Authenticate(self.key, skew=settings.clock_skew_seconds, started=self.started),
            Authorize(self.policy, self.calls, self.events, self.key.public),
            *checks,
            Commit(services),
            Deliver(services),
            Observe(self.audit),
        ]

    async def _after_gate(self, ctx: GateContext) -> None:
        """What a decision sets off: a refused reply fails its call for the caller; repeated
        policy violations quarantine the agent that commits them."""
        denial, env = ctx.denial, ctx.env
        if denial is None or env is None:
            return
        call_id = ctx.notes.get("fail_call")
        withheld = denial.stage == "label"  # the caller's clearance, not the callee's fault
        if call_id and denial.stage in ("label", "validate"):
            await self.calls.fail(call_id, {**denial.to_dict(), "reason": (
                f"the hub refused {env.sender}'s reply: {denial.reason}")},
                target_failed=not withheld)
        if env.kind in ("reply", "progress") and withheld:
            return  # an answer withheld from its caller is no violation by the one answering
        if denial.code in VIOLATIONS and self.containment.violation(env.sender):
            await self.quarantine(env.sender, f"{self.settings.quarantine_after} policy "
                                  f"violations within {self.settings.quarantine_window_seconds:g}s"
                                  f" (last: {denial.code})")

    async def quarantine(self, agent: str, why: str) -> None:
        """Suspend `agent` in mesh.yaml (its traffic is refused until an operator restores it)."""
        policy = self.home.load_policy()
        if agent not in policy.agents or policy.agents[agent].suspended:
            return
        self.home.set_suspended(agent, True)
        self.policy.reload_if_changed()
        await self.audit.append("quarantined", agent=agent, why=why)
        log.warning("quarantined %s: %s", agent, why)
        session = self.registry.session(agent)
        for other in [s for s in self.registry.by_id.values() if s.agent == agent]:
            if other.close is not None:
                with contextlib.suppress(Exception):
                    await other.close(4003, f"{agent} is suspended: {why}")
        del session

    def _breaker_changed(self, target: str, state: str) -> None:
        async def record() -> None:
            await self.registry.set_breaker(target, state)
            await self.audit.append("breaker", target=target, state=state)
        self._background.append(asyncio.ensure_future(record()))

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
