"""The hub: where the gate, the services and the store are put together, once.

    async with Hub(MeshHome(path)) as hub:     # opens the store, continues the audit chain,
        ...                                    # re-arms call deadlines
    app = create_app(home)                     # the ASGI app (`interlink serve` runs it)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

from .delegation import mint
from .envelope import BUS_KINDS
from .errors import ConfigError, GateDenied, StoreUnavailable
from .gate import (
    Authenticate,
    Authorize,
    Commit,
    Decode,
    Deliver,
    GateContext,
    Observe,
    Pipeline,
    Service,
    Session,
    Stage,
    Validate,
)
from .gate.containment import Containment
from .gate.guard import Guard
from .gate.label import LabelStage
from .gate.stage import deny
from .home import MeshHome
from .identity import HubKey
from .labels import Label
from .logs import logged
from .policy import RELOAD_CHECK_SECONDS, Policy, PolicyFile, policy_changes
from .services.audit import AuditLog
from .services.calls import CallService
from .services.events import SCHEMAS_BUCKET, EventBus, events_log
from .services.hubs import HubRoster, Peer
from .services.ledger import CONTAINMENT_BUCKET, StoreLedger
from .services.memory import MEMORY_BUCKET, SharedMemory
from .services.nonces import SharedNonces
from .services.registry import PRESENCE_REFRESH, Registry
from .services.taint import Relabel, Taint
from .services.traces import TraceStore
from .store import Claim, Store, open_store
from .tasks import Tasks

log = logging.getLogger("interlink.hub")

MAX_TTL = 30 * 86400.0
"""The longest a delegation token may live."""

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
        agent = ctx.env.sender if ctx.env else ctx.session.agent
        log.info("connected %s (%s, %s)", agent,
                 "serving" if ctx.session.serves else "client", ctx.session.remote,
                 extra={"agent": agent, "session": ctx.session.id})
        if ctx.session.serves:
            self.calls.connected(ctx.session)
        replaced: Session | None = ctx.replaced
        if replaced is not None and replaced.close is not None:
            replaced.closed = True
            with logged(log, f"closing {replaced.agent}'s replaced connection"):
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
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL:
            return deny("commit", "bad_request", f"a delegation's ttl is seconds, more than 0 "
                        f"and at most {MAX_TTL:g} (30 days), not {ttl!r}")
        ttl = float(ttl)
        parent = ctx.delegation_parent
        if parent is None:
            ctx.answer["token"] = mint(self.key.private, env.sender, env.target, rights, ttl)
        else:  # passed on: the original delegator stays, the chain grows, expiry only shrinks
            ctx.answer["token"] = mint(self.key.private, parent.delegator, env.target, rights,
                                       ttl, via=(*parent.via, env.sender),
                                       not_after=parent.expires)
            ctx.audit_detail = {"delegation": {"chain": [*parent.chain, env.target]}}
        return None

    async def deliver(self, ctx: GateContext) -> None:
        return None


class Hub:
    def __init__(self, home: MeshHome, *, store_url: str | None = None,
                 full_gate: bool = True, claim: Claim | None = None,
                 accept_audit_gap: bool = False, where: str = "",
                 standby: bool = False) -> None:
        home.require()
        self.home = home
        self.key = home.hub_key()
        self.policy = PolicyFile(home.policy_path)
        self.settings = self.policy.policy.hub
        self.store_url = home.store_url(store_url)
        self.started = time.time()
        self.full_gate = full_gate
        self.accept_audit_gap = accept_audit_gap
        self.standby = standby
        """On a shared store served by other hubs: wait until none is left, then start."""
        self.where = where
        self._claim = claim
        self._store: Store | None = None
        self._roster: HubRoster | None = None
        self._nonces: SharedNonces | None = None
        self.console_token = secrets.token_urlsafe(18)
        """The web console's login token for this run of the hub (logged at start)."""
        self.traces: TraceStore | None = None
        self._tracing: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self.peers: list[Peer] = []
        """The other hubs serving the store when this one started (empty: alone)."""
        self._background: list[asyncio.Task[None]] = []
        self._tasks = Tasks(log, "the hub")

    async def __aenter__(self) -> Hub:
        self.home.db_path.parent.mkdir(parents=True, exist_ok=True)
        # writes share commits; what leaves the hub waits for them (`durable`)
        engine = open_store(self.store_url, group_commit=True)
        if self._claim is None:  # before anything touches the store: one hub per store
            self._claim = engine.claim(self.owner())
        try:
            self._store = await engine.__aenter__()
            if engine.shared:  # others can reach it: join the roster of hubs serving it
                self._roster = HubRoster(await self._store.kv("hub"), self.owner())
                if self.standby:
                    await self._roster.wait_alone()
                self.peers = await self._roster.join()
                if self.peers:
                    log.info("serving the store with %s", ", ".join(map(str, self.peers)))
                # The replay floor (a standby waited since long before; nonces seen since are
                # in the store's nonce log, but one older than its window is not)
                self.started = time.time()
            await self._open_services()
        except BaseException:
            if self._roster is not None:
                with logged(log, "leaving the roster of hubs after a failed start"):
                    await self._roster.leave()
                self._roster = None
            if self._store is not None:
                with logged(log, "closing the store after a failed start", logging.WARNING):
                    await self._store.aclose()
                self._store = None
            self._claim.release()
            self._claim = None
            raise
        return self

    async def _open_tracing(self) -> None:
        """Spans of every crossing, to the hub's trace store; with a collector configured,
        through an OpenTelemetry provider of the hub's own (never the process's global one)
        that also batches them to it over OTLP/HTTP."""
        assert self._store is not None
        if not self.settings.tracing:
            return
        self.traces = await TraceStore.open(self._store, self.settings)
        if not self.settings.otlp_endpoint:
            return  # the gate hands the trace store its records directly
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider = TracerProvider(resource=Resource.create({
            "service.name": "interlink-hub", "service.instance.id": self.hub_id,
            "interlink.hub": self.key.id}))
        provider.add_span_processor(self.traces)
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=self.settings.otlp_endpoint)))
        self._tracing = provider
        self._tracer = provider.get_tracer("interlink.hub")

    @property
    def hub_id(self) -> str:
        """This hub process among the hubs serving the store ("hub" when alone on it)."""
        return self._roster.id if self._roster is not None else "hub"

    def owner(self) -> str:
        """Who holds the store, for a second hub's error message."""
        return (f"hub pid {os.getpid()}" + (f" serving {self.where}" if self.where else "")
                + f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}")

    async def _open_services(self) -> None:
        assert self._store is not None
        self.audit = AuditLog(await self._store.log("audit"), self.key,
                              head_path=self.home.audit_head_path, flush=self._store.flush)
        await self.audit.open(accept_gap=self.accept_audit_gap, alone=not self.peers)
        self.registry = Registry(await self._store.kv("registry"), hub=self.hub_id)
        self.taint = Taint(await self._store.kv("taint"), self.policy)
        self.containment = Containment(self.settings)
        self.containment.on_change = self._breaker_changed
        self.calls = CallService(await self._store.log("calls"), await self._store.kv("calls"),
                                 self.audit, self.settings, self.registry.session,
                                 self.registry.session_by_id, self.taint,
                                 on_outcome=self.containment.outcome,
                                 suspended=self.is_suspended,
                                 hub_id=self.hub_id)
        self.events = EventBus(
            await events_log(self._store, self.settings),
            await self._store.kv(SCHEMAS_BUCKET), self.audit, self.settings, self.policy,
            self.taint)
        self.memory = SharedMemory(await self._store.kv(
            MEMORY_BUCKET, history=self.settings.memory_history), self.policy, self.taint)
        self._hub_kv = await self._store.kv("hub")
        # hubs sharing the store share their nonces, budgets and workflows; a hub alone on
        # its store keeps them in memory
        if self._roster is not None:
            self._nonces = await SharedNonces.open(self._store, self.settings.clock_skew_seconds)
            self.containment.ledger = StoreLedger(await self._store.kv(CONTAINMENT_BUCKET,
                                                                       history=1))
        await self._open_tracing()
        hello = HelloService(self.registry, self.calls)
        services: dict[str, Service] = {
            "hello": hello, "call": self.calls, "reply": self.calls, "progress": self.calls,
            "memory": self.memory, "delegate": Delegations(self.key), "approve": self.calls,
            "endorse": Relabel(self.taint), "declassify": Relabel(self.taint),
            **{kind: self.events for kind in BUS_KINDS}}
        self.gate = Pipeline(self.stages(services, full=self.full_gate),
                             after=[self._after_gate])
        alone = not self.peers
        await self.calls.start(alone=alone, shared=self._roster is not None)
        await self.events.start(alone=alone)
        await self.audit.append("hub_started", hub=self.key.id, gate=list(self.gate.names),
                                **({"joined": [p.id for p in self.peers]} if self.peers else {}))
        await self._policy_at_start()
        self.policy.listeners.append(self._policy_listener)
        self._background = [asyncio.ensure_future(self._housekeeping()),
                            asyncio.ensure_future(self._ticker())]
        if self._roster is not None:  # what other hubs change that this one keeps copies of
            self._background.append(asyncio.ensure_future(self.registry.follow()))

    async def __aexit__(self, *exc: Any) -> None:
        log.info("stopping: the services, the last spans, the audit seal, the store")
        if self._listening():
            self.policy.listeners.remove(self._policy_listener)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._tasks.wait()  # policy changes and breaker records still being written
        await self.calls.aclose()
        await self.events.aclose()
        await self.memory.aclose()
        if self._tracing is not None:
            self._tracing.shutdown()  # the collector gets what is batched
        if self._store is not None:
            if self.traces is not None:
                with logged(log, "writing the last spans to the trace store"):
                    await self.traces.flush()
            try:
                await self.audit.append("hub_stopped", hub=self.key.id)
                await self.audit.checkpoint()
            except Exception:
                log.exception("the audit chain could not be sealed at stop; the next hub "
                              "start records an unclean stop")
            if self._roster is not None:
                with logged(log, "leaving the roster of hubs"):
                    await self._roster.leave()
                self._roster = None
            await self._store.aclose()
            self._store = None
        if self._claim is not None:
            self._claim.release()
            self._claim = None
        log.info("stopped")

    def _listening(self) -> bool:
        return self._policy_listener in self.policy.listeners

    def stages(self, services: dict[str, Service], *, full: bool = True) -> list[Stage]:
        """The gate, in order. `full=False` leaves out label, validate and guard (only for
        measuring what they cost: `interlink bench --sections gate`)."""
        settings = self.settings
        checks: list[Stage] = [
            LabelStage(self.policy, self.taint, self.calls, self.registry),
            Validate(self.events, self.registry, self.calls,
                     max_event_bytes=settings.max_event_bytes,
                     max_memory_value_bytes=settings.max_memory_value_bytes,
                     max_depth=settings.max_depth),
            Guard(self.containment, settings, self.policy, self.calls),
        ] if full else []
        return [
            Decode(settings.max_envelope_bytes),
            Authenticate(self.key, skew=settings.clock_skew_seconds, started=self.started,
                         policy=self.policy, nonces=self._nonces),
            Authorize(self.policy, self.calls, self.events, self.key.public),
            *checks,
            Commit(services),
            Deliver(services),
            Observe(self.audit, tracer=self._tracer,
                    spans=self.traces if self._tracer is None else None),
        ]

    async def _after_gate(self, ctx: GateContext) -> None:
        """What a decision sets off: a refused reply fails its call for the caller; repeated
        policy violations quarantine the agent that commits them."""
        denial, env = ctx.denial, ctx.env
        if denial is None or env is None:
            return
        call_id = ctx.fail_call
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
        """Suspend `agent` in mesh.yaml: its traffic is refused and nothing is delivered to it
        until an operator restores it."""
        policy = self.home.load_policy()
        if agent not in policy.agents or policy.agents[agent].suspended:
            return
        self.home.set_suspended(agent, True)
        await self.audit.append("quarantined", agent=agent, why=why)
        log.warning("quarantined %s: %s", agent, why)
        self.policy.reload_if_changed()  # the policy listener cuts the agent off

    def is_suspended(self, agent: str) -> bool:
        grants = self.policy.current().agents.get(agent)
        return grants is not None and grants.suspended

    async def _cut_off(self, agent: str, why: str) -> None:
        """The kill switch: calls waiting for `agent` fail at once (their callers hear why),
        and its connections close, which ends its subscriptions and memory watches."""
        failed = await self.calls.fail_all_to(agent, why)
        sessions = [s for s in self.registry.by_id.values() if s.agent == agent]
        for session in sessions:
            if session.close is not None:
                with logged(log, f"closing {agent}'s connection ({why})"):
                    await session.close(4003, f"{agent} is {why}")
        await self.audit.append("cut_off", agent=agent, why=why, calls_failed=failed,
                                connections_closed=len(sessions))

    # -- policy changes ----------------------------------------------------------------------

    def _policy_listener(self, old: Policy, new: Policy) -> None:
        self._spawn(self._policy_changed(old, new, self.policy.digest))

    async def _policy_changed(self, old: Policy, new: Policy, digest: str, *,
                              while_stopped: bool = False) -> None:
        """Every change of mesh.yaml is an audit record (its digest and what changed); an agent
        that became suspended or was removed is cut off."""
        changes = policy_changes(old, new)
        await self.audit.append("policy", digest=digest, changes=changes,
                                **({"while_stopped": True} if while_stopped else {}))
        await self._hub_kv.put("policy", json.dumps(
            {"digest": digest, "policy": new.model_dump(mode="json")}).encode())
        for name in sorted(set(old.agents) - set(new.agents)):
            await self._cut_off(name, "removed from mesh.yaml")
        revoked = set(new.revoked) - set(old.revoked)
        for session in list(self.registry.by_id.values()):
            credential = session.credential
            if credential is not None and credential.id in revoked and session.close:
                with logged(log, f"closing a connection of revoked {credential.id}"):
                    await session.close(4003, f"credential {credential.id} revoked")
        for name, grants in sorted(new.agents.items()):
            before = old.agents.get(name)
            if grants.suspended and before is not None and not before.suspended:
                await self._cut_off(name, "suspended")

    async def _policy_at_start(self) -> None:
        """The policy in force, in the chain: a change made while no hub ran is recorded as
        such, and calls queued for agents suspended meanwhile fail now."""
        policy, digest = self.policy.current(), self.policy.digest
        entry = await self._hub_kv.get("policy")
        if entry is not None and entry.value:
            stored = json.loads(entry.value)
            if stored.get("digest") == digest:
                return
            try:
                old = Policy.model_validate(stored.get("policy") or {})
            except ValueError:
                old = Policy()
            await self._policy_changed(old, policy, digest, while_stopped=True)
            return
        await self.audit.append("policy", digest=digest, initial=True)
        await self._hub_kv.put("policy", json.dumps(
            {"digest": digest, "policy": policy.model_dump(mode="json")}).encode())
        for name, grants in sorted(policy.agents.items()):
            if grants.suspended:
                await self.calls.fail_all_to(name)

    # -- operator acts -----------------------------------------------------------------------

    async def decide_held(self, call_id: str, approved: bool, *, by: str,
                          reason: str = "") -> str | None:
        """An operator's decision on a held call (the console), audited naming who; why it
        cannot be decided, or None."""
        problem = await self.calls.decide(call_id, approved, by=by, reason=reason[:500])
        if problem is None:
            await self.audit.append("approval", call=call_id, approved=approved, by=by,
                                    reason=reason[:500])
        return problem

    async def clear_taint(self, agent: str, *, by: str, reason: str = "") -> Label:
        """Forget what `agent` was given (an operator's act, audited with the label it had)."""
        if agent not in self.policy.current().agents:
            raise ConfigError(f"agent {agent!r} is not enrolled")
        before = await self.taint.clear(agent)
        await self.audit.append("taint_cleared", agent=agent, by=by, reason=reason[:500],
                                before=before.to_dict())
        return before

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro)

    def _breaker_changed(self, target: str, state: str) -> None:
        async def record() -> None:
            await self.registry.set_breaker(target, state, hub=self.hub_id)
            await self.audit.append("breaker", target=target, state=state)
        self._spawn(record())

    @property
    def store(self) -> Store:
        assert self._store is not None, "the hub is not open"
        return self._store

    async def durable(self) -> None:
        """Return once everything the hub has written is durable. Every way out of the hub
        awaits it before anything leaves: a connection's frames and HTTP responses (the app's
        `Durable` middleware), an in-process edge's frames, the audit head file. That is
        what lets writes share a commit without an answer ever running ahead of the store."""
        if self._store is not None:
            await self._store.flush()

    async def handle(self, raw: bytes, session: Session) -> GateContext:
        """One frame from an edge, through the gate."""
        return await self.gate.run(raw, session)

    async def disconnected(self, session: Session) -> None:
        session.closed = True
        if session.agent is not None:
            log.info("disconnected %s (%s)", session.agent, session.remote,
                     extra={"agent": session.agent, "session": session.id})
        await self.registry.disconnected(session)
        await self.calls.disconnected(session)
        await self.events.disconnected(session)
        await self.memory.disconnected(session)

    async def _housekeeping(self) -> None:
        """Presence refresh, and this hub's place on the roster renewed (a third of its life
        apart)."""
        every = PRESENCE_REFRESH if self._roster is None else min(PRESENCE_REFRESH,
                                                                  self._roster.seconds / 3)
        last_presence = time.monotonic()
        while True:
            await asyncio.sleep(every)
            try:
                if self._roster is not None:
                    await self._roster.renew()
                if time.monotonic() - last_presence >= PRESENCE_REFRESH - 0.01:
                    last_presence = time.monotonic()
                    await self.registry.refresh_presence()
            except StoreUnavailable:
                pass  # the store said it is away (and says when it is back)
            except Exception:
                log.exception("housekeeping failed; will retry")

    async def _ticker(self) -> None:
        """mesh.yaml re-read as it changes (so a suspension takes effect within a quarter
        second), and the audit chain sealed every `hub.audit_seal_seconds`."""
        last_seal = time.monotonic()
        while True:
            await asyncio.sleep(RELOAD_CHECK_SECONDS)
            try:
                if self.traces is not None:
                    await self.traces.flush()
                self.policy.reload_if_changed()
                if time.monotonic() - last_seal >= self.settings.audit_seal_seconds:
                    last_seal = time.monotonic()
                    await self.audit.checkpoint()
            except StoreUnavailable:
                pass  # sealed once the store is back
            except Exception:
                log.exception("policy reload or audit seal failed; will retry")
