"""guard: containment. Rate limits per agent, the hop limit of a call chain, the permitted
call graph of a conversation (`workflows` in mesh.yaml), budgets per
conversation (messages, and model tokens agents report in replies as `usage.tokens`), and
circuit breakers per target (a failing agent gets fast refusals instead of more load).

Runs last before commit, so that only envelopes every other stage accepted count against
limits and probe a half-open breaker.
"""

from __future__ import annotations

import math

from ..errors import GateDenied
from ..policy import HubSettings, PolicyFile
from .containment import Containment
from .context import GateContext
from .lookups import CallLookup
from .stage import deny

CONTROL = ("ack", "reply", "progress", "unsubscribe")
"""Envelopes that settle work already admitted: rate-limited apart from data."""


class Guard:
    name = "guard"

    def __init__(self, containment: Containment, settings: HubSettings,
                 policy: PolicyFile, calls: CallLookup) -> None:
        self.containment = containment
        self.settings = settings
        self.policy = policy
        self.calls = calls

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        if env.kind == "hello":
            return None
        if env.kind in CONTROL:
            if not self.containment.take(env.sender, control=True):
                return deny(self.name, "rate_limited",
                            f"{env.sender} settles faster than "
                            f"{self.settings.control_rate_per_agent:g} acks/replies per second "
                            f"(burst {self.settings.control_rate_burst}); slow down and retry",
                            "hub.control_rate_per_agent", detail={"retriable": True})
        else:
            grants = self.policy.current().agents.get(env.sender)
            own = grants.rate if grants is not None else None
            if not self.containment.take(env.sender, rate=own):
                limit = own if own is not None else self.settings.rate_per_agent or 0.0
                return deny(self.name, "rate_limited",
                            f"{env.sender} sends faster than {limit:g} envelopes/s; slow down "
                            "and retry", f"agents.{env.sender}.rate" if own is not None
                            else "hub.rate_per_agent", detail={"retriable": True})
        if env.kind == "call":
            if env.parent:
                served = await ctx.call(self.calls, env.parent)
                if served is not None and served.target == env.sender:
                    expected = served.hops + 1
                    if env.hops != expected or env.conversation != served.conversation:
                        return deny(self.name, "broken_chain",
                                    f"a call made while serving call {env.parent} is hop "
                                    f"{expected} of conversation {served.conversation}, not hop "
                                    f"{env.hops} of {env.conversation}",
                                    "calls: a nested call continues its parent's chain")
            if self.calls.open_calls(env.sender) >= self.settings.max_open_calls:
                return deny(self.name, "too_many_open_calls",
                            f"{env.sender} already has {self.settings.max_open_calls} "
                            "unfinished calls; wait for some to finish", "hub.max_open_calls")
            if env.hops > self.settings.max_hops:
                return deny(self.name, "hop_limit",
                            f"this call is hop {env.hops} of a chain; the limit is "
                            f"{self.settings.max_hops} (a loop between agents?)",
                            "hub.max_hops")
            target, skill = env.call_target()
            workflows = self.policy.current().workflows
            flow = await self.containment.workflow(env.conversation, f"{target}.{skill}", workflows)
            if flow is not None:
                edge = workflows[flow].allows(env.sender, f"{target}.{skill}")
                if edge is None:
                    return deny(self.name, "off_graph",
                                f"this conversation follows workflow {flow!r}, which has no "
                                f"call {env.sender} -> {target}.{skill}",
                                f"workflows.{flow}.edges")
            refused = self.containment.admit(target)
            if refused:
                return deny(self.name, "circuit_open", refused, f"breaker: {target}")
        if env.kind in ("call", "publish", "reply"):
            usage = env.body.get("usage") if env.kind == "reply" else None
            tokens = usage.get("tokens", 0) if isinstance(usage, dict) else 0
            tokens = float(tokens) if isinstance(tokens, int | float) and not isinstance(
                tokens, bool) and math.isfinite(tokens) and tokens > 0 else 0.0
            conversation = env.conversation
            if env.kind == "reply" and env.parent:  # charged to the call's conversation
                answered = await ctx.call(self.calls, env.parent)
                conversation = answered.conversation if answered is not None else conversation
            over = await self.containment.spend(conversation, tokens)
            if over and env.kind != "reply":  # a reply finishes work already paid for
                return deny(self.name, "budget_exhausted", over,
                            "hub.conversation_max_messages / conversation_max_tokens")
        return None
