"""authorize: may this verified sender do this? Default deny; every decision names its rule.

Rights come from the sender's verified identity and its grants in mesh.yaml only. Nothing in
an envelope's body (a claimed role, a "physician" in the text) is read here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..delegation import DelegationError
from ..delegation import check as check_delegation
from ..errors import GateDenied
from ..names import (
    MEMORY_READS,
    MEMORY_WRITES,
    namespace_error,
    pattern_error,
    topic_error,
)
from ..policy import Policy, PolicyFile
from .context import GateContext
from .lookups import CallLookup, SubscriptionLookup
from .stage import deny


class Authorize:
    name = "authorize"

    def __init__(self, policy: PolicyFile, calls: CallLookup,
                 subscriptions: SubscriptionLookup, hub_public: Ed25519PublicKey) -> None:
        self.policy = policy
        self.calls = calls
        self.subscriptions = subscriptions
        self.hub_public = hub_public

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        policy = self.policy.current()
        if not policy.enrolled(env.sender):
            return deny(self.name, "not_enrolled",
                        f"{env.sender!r} is not an agent of this mesh (removed from mesh.yaml?)",
                        f"agents.{env.sender}: absent")
        if policy.agents[env.sender].suspended:
            return deny(self.name, "suspended",
                        f"{env.sender} is suspended (quarantined after repeated policy "
                        "violations, or by an operator); its traffic is refused until "
                        f"`interlink agent restore {env.sender}`",
                        f"agents.{env.sender}.suspended: true")
        if env.kind == "hello":
            ctx.rule = f"agents.{env.sender}: enrolled"
            return None
        if env.kind == "call":
            try:
                target, skill = env.call_target()
            except ValueError as exc:
                return deny(self.name, "bad_target", str(exc))
            if not policy.enrolled(target):
                return deny(self.name, "unknown_target",
                            f"there is no agent {target!r} on this mesh; `interlink agents` "
                            "lists them")
            if "delegation" in env.body:
                return self._delegated(ctx, policy, target, skill)
            decision = policy.may_call(env.sender, target, skill)
            if not decision.allowed:
                return deny(self.name, "not_granted",
                            f"{env.sender} may not call {target}.{skill}", decision.rule)
            ctx.rule = decision.rule
            return None
        if env.kind == "delegate":
            return self._delegate(ctx, policy)
        if env.kind in ("endorse", "declassify"):
            if not policy.enrolled(env.target):
                return deny(self.name, "unknown_target", f"there is no agent {env.target!r}")
            decision = policy.may_act_for(env.sender, env.kind, env.target)
            if not decision.allowed:
                return deny(self.name, "not_granted",
                            f"{env.sender} may not {env.kind} for {env.target}", decision.rule)
            ctx.rule = decision.rule
            return None
        if env.kind == "approve":
            record = await ctx.call(self.calls, env.target)
            if record is None:
                return deny(self.name, "unknown_call", f"there is no call {env.target}")
            target = record.target
            decision = policy.may_act_for(env.sender, "approve", target)
            if not decision.allowed:
                return deny(self.name, "not_granted",
                            f"{env.sender} may not approve calls to {target}", decision.rule)
            ctx.rule = decision.rule
            return None
        if env.kind in ("reply", "progress"):
            if env.parent is None:
                return deny(self.name, "unknown_call",
                            f"a {env.kind} must name the call it answers in `parent`")
            record = await ctx.call(self.calls, env.parent)
            if record is None:
                return deny(self.name, "unknown_call",
                            f"there is no call {env.parent} (never made, or long finished)")
            if record.target != env.sender:
                return deny(self.name, "not_callee",
                            f"call {env.parent} was made to {record.target}; only it may "
                            "answer", "calls: only the callee answers a call")
            if record.conversation != env.conversation:
                return deny(self.name, "wrong_conversation",
                            f"call {env.parent} belongs to conversation "
                            f"{record.conversation}; its {env.kind} must too",
                            "calls: an answer stays in its call's conversation")
            ctx.rule = "calls: the callee answers its call"
            return None
        if env.kind in ("publish", "subscribe", "ack", "unsubscribe", "schema"):
            return self._bus(ctx, policy)
        if env.kind == "memory":
            return self._memory(ctx, policy)
        return deny(self.name, "unknown_kind", f"no rule covers envelopes of kind {env.kind!r}")

    def _delegated(self, ctx: GateContext, policy: Policy, target: str,
                   skill: str) -> GateDenied | None:
        """A call made for another agent: the token's rights, every check added along the
        chain, and the delegator's grants now — the intersection decides."""
        env = ctx.env
        assert env is not None
        try:
            chain = check_delegation(str(env.body["delegation"]), self.hub_public,
                                     holder=env.sender, agent=target, skill=skill)
        except DelegationError as exc:
            return deny(self.name, "delegation_refused", str(exc), "delegation: biscuit")
        revoked = policy.is_revoked(*chain.revocation_ids)
        if revoked:
            return deny(self.name, "delegation_refused",
                        f"the delegation token was revoked ({revoked[:16]}…)", "revoked")
        cut = [a for a in chain.chain if a not in policy.agents or policy.agents[a].suspended]
        if cut:
            return deny(self.name, "delegation_refused",
                        f"the delegation passes through {', '.join(cut)}, which is suspended "
                        "or no longer enrolled", f"agents.{cut[0]}.suspended")
        decision = policy.may_call(chain.delegator, target, skill)
        if not decision.allowed:
            return deny(self.name, "delegation_refused",
                        f"{chain.delegator}, who delegated to {env.sender}, may not call "
                        f"{target}.{skill} itself (any more)", decision.rule)
        ctx.rule = (f"delegation {' → '.join(chain.chain)} "
                    f"(biscuit {chain.revocation_ids[0][:16]}…); {decision.rule}")
        ctx.audit_detail = {"delegation": {"from": chain.delegator, "to": env.sender,
                                             "chain": chain.chain,
                                             "revocation_ids": chain.revocation_ids}}
        return None

    def _delegate(self, ctx: GateContext, policy: Policy) -> GateDenied | None:
        """May the sender hand these rights to the target? Only rights it holds itself."""
        env = ctx.env
        assert env is not None
        if not policy.enrolled(env.target):
            return deny(self.name, "unknown_target", f"there is no agent {env.target!r}")
        rights = env.body.get("rights")
        if not isinstance(rights, list) or not rights:
            return deny(self.name, "bad_request", "a delegation lists `rights`: agent.skill")
        parent = env.body.get("from_token")
        for right in rights:
            agent, _, skill = str(right).partition(".")
            if parent is None:
                decision = policy.may_call(env.sender, agent, skill)
                if not decision.allowed:
                    return deny(self.name, "not_granted",
                                f"{env.sender} cannot delegate {right}: it may not call it "
                                "itself", decision.rule)
                continue
            try:  # passing on: only what the token it holds allows, never wider
                chain = check_delegation(str(parent), self.hub_public, holder=env.sender,
                                         agent=agent, skill=skill)
            except DelegationError as exc:
                return deny(self.name, "delegation_refused",
                            f"{env.sender} cannot pass on {right}: {exc}", "delegation: biscuit")
            if policy.is_revoked(*chain.revocation_ids):
                return deny(self.name, "delegation_refused",
                            f"{env.sender} cannot pass on {right}: its token was revoked",
                            "revoked")
            if not policy.may_call(chain.delegator, agent, skill).allowed or any(
                    a not in policy.agents or policy.agents[a].suspended for a in chain.chain):
                return deny(self.name, "delegation_refused",
                            f"{chain.delegator} may no longer call {right}, or an agent of "
                            "the chain is suspended")
            ctx.delegation_parent = chain
        ctx.rule = (f"agents.{env.sender}.calls: delegates only what it holds" if parent is None
                    else "delegation: passes on only what its token allows")
        return None

    def _memory(self, ctx: GateContext, policy: Policy) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        problem = namespace_error(env.target)
        if problem:
            return deny(self.name, "bad_namespace", problem)
        op = env.body.get("op")
        if op not in MEMORY_READS + MEMORY_WRITES:
            return deny(self.name, "bad_request",
                        f"memory op {op!r} is not one of "
                        f"{', '.join(MEMORY_READS + MEMORY_WRITES)}")
        write = op in MEMORY_WRITES
        decision = policy.may_use_memory(env.sender, env.target, write=write)
        if not decision.allowed:
            return deny(self.name, "not_granted", f"{env.sender} may not "
                        f"{'write to' if write else 'read'} memory namespace {env.target}",
                        decision.rule)
        ctx.rule = decision.rule
        return None

    def _bus(self, ctx: GateContext, policy: Policy) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        if env.kind in ("publish", "schema"):
            problem = topic_error(env.target)
            if problem:
                return deny(self.name, "bad_topic", problem)
            decision = policy.may_publish(env.sender, env.target)
            if not decision.allowed:
                what = "publish to" if env.kind == "publish" else "register a schema for"
                return deny(self.name, "not_granted", f"{env.sender} may not {what} "
                            f"{env.target}", decision.rule)
            ctx.rule = decision.rule
        elif env.kind == "subscribe":
            problem = pattern_error(env.target)
            if problem:
                return deny(self.name, "bad_pattern", problem)
            decision = policy.may_subscribe(env.sender, env.target)
            if not decision.allowed:
                return deny(self.name, "not_granted",
                            f"{env.sender} may not subscribe to {env.target}", decision.rule)
            ctx.rule = decision.rule
        elif env.kind == "ack":
            if not self.subscriptions.holds(ctx.session, env.target):
                return deny(self.name, "not_subscribed",
                            f"this connection does not subscribe to consumer {env.target!r}; "
                            "only its subscribers ack its events",
                            "events: a consumer's subscribers settle its events")
            ctx.rule = "events: a consumer's subscribers settle its events"
        else:
            if self.subscriptions.subscription(ctx.session, env.target) is None:
                return deny(self.name, "unknown_subscription",
                            f"this connection has no subscription {env.target!r}")
            ctx.rule = "events: a subscriber ends its own subscription"
        return None
