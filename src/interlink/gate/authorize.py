"""authorize: may this verified sender do this? Default deny; every decision names its rule.

Rights come from the sender's verified identity and its grants in mesh.yaml only. Nothing in
an envelope's body (a claimed role, a "physician" in the text) is read here.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import GateDenied
from ..policy import PolicyFile
from .context import GateContext
from .stage import deny


class CallLookup(Protocol):
    async def answerer(self, call_id: str) -> str | None:
        """The agent that may answer (reply to, report progress on) this call, if it exists."""


class Authorize:
    name = "authorize"

    def __init__(self, policy: PolicyFile, calls: CallLookup) -> None:
        self.policy = policy
        self.calls = calls

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        policy = self.policy.current()
        if not policy.enrolled(env.sender):
            return deny(self.name, "not_enrolled",
                        f"{env.sender!r} is not an agent of this mesh (removed from mesh.yaml?)",
                        f"agents.{env.sender}: absent")
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
            decision = policy.may_call(env.sender, target, skill)
            if not decision.allowed:
                return deny(self.name, "not_granted",
                            f"{env.sender} may not call {target}.{skill}", decision.rule)
            ctx.rule = decision.rule
            return None
        if env.kind in ("reply", "progress"):
            if env.parent is None:
                return deny(self.name, "unknown_call",
                            f"a {env.kind} must name the call it answers in `parent`")
            answerer = await self.calls.answerer(env.parent)
            if answerer is None:
                return deny(self.name, "unknown_call",
                            f"there is no call {env.parent} (never made, or long finished)")
            if answerer != env.sender:
                return deny(self.name, "not_callee",
                            f"call {env.parent} was made to {answerer}; only it may answer",
                            "calls: only the callee answers a call")
            ctx.rule = "calls: the callee answers its call"
            return None
        return deny(self.name, "unknown_kind", f"no rule covers envelopes of kind {env.kind!r}")
