"""label: what the envelope carries, and may it flow where it is going?

The envelope's effective label is the join of
* what the sender declared (`labels`: it may raise, never lower),
* the sender's floor from mesh.yaml (`agents.X.label`, e.g. untrusted web content),
* the sender itself as a source (provenance), and
* the sender's context taint: everything the hub has delivered to it in this conversation.

Then the flow rules, each naming its rule when it refuses:
* a call or reply goes only to an agent whose clearance covers the label (level and tags);
* a skill marked sensitive refuses untrusted input, and one marked `needs_approval` holds it
  for an approver (an agent granted `approve`, or a person through the CLI);
* a publish fits its topic's classification, a memory write its namespace's.
Events and memory reads are checked per recipient when delivered (`policy.may_receive`), and every
delivery adds to the recipient's taint.
"""

from __future__ import annotations

from ..errors import GateDenied
from ..labels import Label, LabelError
from ..policy import Policy, PolicyFile, may_receive
from .context import GateContext
from .lookups import CallLookup, CardLookup, TaintLookup
from .stage import deny

CONTROL = ("hello", "subscribe", "ack", "unsubscribe", "schema", "delegate", "endorse",
           "declassify", "approve")


class LabelStage:
    name = "label"

    def __init__(self, policy: PolicyFile, taint: TaintLookup, calls: CallLookup,
                 cards: CardLookup) -> None:
        self.policy = policy
        self.taint = taint
        self.calls = calls
        self.cards = cards

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        if env.kind in CONTROL:
            return None
        policy = self.policy.current()
        try:
            declared = Label.parse(env.labels)
            floor = Label.parse(policy.agents[env.sender].label)
        except LabelError as exc:
            return deny(self.name, "bad_label", str(exc))
        grants = policy.agents[env.sender]
        claimed = declared.covered_by(grants.clearance.level, grants.clearance.tags)
        if claimed:  # one cannot claim to hold what one may not see
            return deny(self.name, "label_above_clearance",
                        f"{env.sender} declares data it is not cleared for: {claimed}",
                        f"agents.{env.sender}.clearance: {grants.clearance.level}")
        context = await self.taint.of(env.sender, env.conversation)
        label = declared.join(floor).join(context).join(
            Label(provenance=frozenset({f"agent:{env.sender}"})))
        ctx.label = label
        if env.kind == "call":
            target, skill = env.call_target()
            return self._to_agent(policy, target, label) or self._sensitive(
                ctx, policy, target, skill, label)
        if env.kind in ("reply", "progress") and env.parent:
            record = await ctx.call(self.calls, env.parent)
            caller = record.caller if record is not None else None
            if record is not None:  # what the skill says its answers are, at least
                label = label.join(await self._output_label(policy, env.sender, record.skill))
                ctx.label = label
            if env.kind == "reply":
                ctx.fail_call = env.parent  # if withheld, the caller hears why
            return self._to_agent(policy, caller, label) if caller else None
        if env.kind == "publish":
            klass, rule = policy.topic_class(env.target)
            problem = label.covered_by(klass.level, klass.tags)
            if problem:
                return deny(self.name, "over_classified",
                            f"{env.target} may not carry this event: {problem}", rule)
        if env.kind == "memory" and env.body.get("op") in ("put", "update"):
            klass, rule = policy.namespace_class(env.target)
            problem = label.covered_by(klass.level, klass.tags)
            if problem:
                return deny(self.name, "over_classified",
                            f"memory namespace {env.target} may not hold this: {problem}", rule)
        return None

    async def _output_label(self, policy: Policy, agent: str, skill: str) -> Label:
        """The floor for `agent.skill`'s answers: mesh.yaml's `output_labels` joined with what
        the agent's own card declares (either may only raise it)."""
        label = Label()
        declared = policy.output_label(agent, skill)
        if declared is not None:
            label = label.join(Label.parse(declared[0]))
        card = await self.cards.card(agent)
        for entry in (card.skills if card else []):
            if entry.id == skill and entry.output_label:
                label = label.join(Label.parse(entry.output_label))
        return label

    def _to_agent(self, policy: Policy, agent: str, label: Label) -> GateDenied | None:
        refused = may_receive(policy, agent, label)
        if refused:
            return deny(self.name, refused.code, f"{refused.reason} ({label.describe()})",
                        refused.rule)
        return None

    def _sensitive(self, ctx: GateContext, policy: Policy, target: str, skill: str,
                   label: Label) -> GateDenied | None:
        if label.integrity != "untrusted":
            return None
        held = policy.holds_for_approval(target, skill)
        if held:  # legitimate work on untrusted data: an approver decides
            ctx.hold = held
            return None
        rule = policy.is_sensitive(target, skill)
        if rule:
            sources = ", ".join(sorted(label.provenance)) or "unknown"
            return deny(self.name, "untrusted_input",
                        f"{target}.{skill} is sensitive and this request carries untrusted "
                        f"data (from {sources}); it needs trusted input", rule)
        return None
