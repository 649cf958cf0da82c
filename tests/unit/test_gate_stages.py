"""Each gate stage alone, with fake lookups (the protocols in `gate/lookups.py`): no hub, no
store, no sockets. What a stage decides, and that it reads a call's record once per envelope."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlink.envelope import Envelope
from interlink.gate import Authorize, GateContext, Session, Validate
from interlink.gate.containment import Containment
from interlink.gate.guard import Guard
from interlink.gate.label import LabelStage
from interlink.labels import Label
from interlink.policy import HubSettings, PolicyFile
from interlink.services.registry import AgentCard, SkillCard

MESH = """
agents:
  alice: {calls: [bob.echo, bob.secret], clearance: {level: confidential}}
  bob: {calls: [carol.*], output_labels: {secret: {level: confidential}}}
  carol: {}
  nosy: {clearance: {level: public}, calls: [bob.secret]}
hub: {max_hops: 3, max_open_calls: 2}
"""


@dataclass
class Call:
    id: str
    caller: str
    target: str
    skill: str
    conversation: str
    hops: int = 0


@dataclass
class FakeCalls:
    records: dict[str, Call] = field(default_factory=dict)
    reads: int = 0
    open: dict[str, int] = field(default_factory=dict)

    async def record(self, call_id: str) -> Call | None:
        self.reads += 1
        return self.records.get(call_id)

    def open_calls(self, caller: str) -> int:
        return self.open.get(caller, 0)


class FakeCards:
    def __init__(self, **cards: AgentCard) -> None:
        self.cards = cards

    async def card(self, agent: str) -> AgentCard | None:
        return self.cards.get(agent)


class NoTaint:
    async def of(self, agent: str, conversation: str) -> Label:
        return Label()


class NoSubscriptions:
    def holds(self, session: Session, consumer: str) -> bool:
        return False

    def subscription(self, session: Session, sub_id: str) -> object | None:
        return None


class NoSchemas:
    def schema(self, topic: str) -> Any:
        return None


@pytest.fixture
def policy(tmp_path: Path) -> PolicyFile:
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH)
    return PolicyFile(path)


def envelope(kind: str, sender: str, target: str, *, parent: str | None = None,
             conversation: str = "conv-1", hops: int = 0, data: Any = None) -> GateContext:
    body = ({"message": {"role": "ROLE_USER", "parts": [{"data": data}]}}
            if kind in ("call", "reply") else {})
    env = Envelope(id=uuid.uuid4().hex, kind=kind, sender=sender,  # type: ignore[arg-type]
                   target=target, conversation=conversation, parent=parent, hops=hops,
                   traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", ts=time.time(),
                   nonce=uuid.uuid4().hex, body=body)
    session = Session(id="s1", remote="test", challenge="c", send=_nowhere, agent=sender)
    return GateContext(raw=b"", session=session, received=time.time(), env=env, wire={})


async def _nowhere(frame: Any) -> None:
    return None


def authorize(policy: PolicyFile, calls: FakeCalls) -> Authorize:
    return Authorize(policy, calls, NoSubscriptions(),
                     Ed25519PrivateKey.generate().public_key())


async def test_authorize_calls_by_grant_and_names_the_rule(policy: PolicyFile) -> None:
    stage = authorize(policy, FakeCalls())
    ctx = envelope("call", "alice", "bob.echo")
    assert await stage(ctx) is None and ctx.rule == "agents.alice.calls[0]: bob.echo"
    refused = await stage(envelope("call", "alice", "carol.echo"))
    assert refused is not None and refused.code == "not_granted"
    assert "agents.alice.calls" in (refused.rule or "")


async def test_authorize_lets_only_the_callee_answer_in_the_calls_conversation(
        policy: PolicyFile) -> None:
    calls = FakeCalls({"c1": Call("c1", "alice", "bob", "echo", "conv-1")})
    stage = authorize(policy, calls)
    assert await stage(envelope("reply", "bob", "alice", parent="c1")) is None
    impostor = await stage(envelope("reply", "carol", "alice", parent="c1"))
    assert impostor is not None and impostor.code == "not_callee"
    moved = await stage(envelope("reply", "bob", "alice", parent="c1", conversation="other"))
    assert moved is not None and moved.code == "wrong_conversation"
    unknown = await stage(envelope("reply", "bob", "alice", parent="nope"))
    assert unknown is not None and unknown.code == "unknown_call"


async def test_a_reply_reads_its_calls_record_once_through_the_whole_gate(
        policy: PolicyFile) -> None:
    calls = FakeCalls({"c1": Call("c1", "alice", "bob", "echo", "conv-1")})
    cards = FakeCards(bob=AgentCard(name="bob", skills=[SkillCard(id="echo")]))
    stages = [authorize(policy, calls), LabelStage(policy, NoTaint(), calls, cards),
              Validate(NoSchemas(), cards, calls, max_event_bytes=1 << 16,
                       max_memory_value_bytes=1 << 16, max_depth=32),
              Guard(Containment(HubSettings()), HubSettings(), policy, calls)]
    ctx = envelope("reply", "bob", "alice", parent="c1", data={"ok": True})
    for stage in stages:
        assert await stage(ctx) is None, stage.name
    assert calls.reads == 1


async def test_label_joins_the_skills_output_label_and_withholds_it_from_the_uncleared(
        policy: PolicyFile) -> None:
    calls = FakeCalls({"c1": Call("c1", "alice", "bob", "secret", "conv-1"),
                       "c2": Call("c2", "nosy", "bob", "secret", "conv-1")})
    stage = LabelStage(policy, NoTaint(), calls, FakeCards())
    ctx = envelope("reply", "bob", "alice", parent="c1")
    assert await stage(ctx) is None
    assert ctx.label.level == "confidential"  # mesh.yaml's output_labels for bob.secret
    withheld = await stage(envelope("reply", "bob", "nosy", parent="c2"))
    assert withheld is not None and withheld.code == "not_cleared"


async def test_validate_checks_input_against_the_skills_schema(policy: PolicyFile) -> None:
    cards = FakeCards(bob=AgentCard(name="bob", skills=[SkillCard(
        id="echo", input_schema={"type": "object", "required": ["topic"]})]))
    stage = Validate(NoSchemas(), cards, FakeCalls(), max_event_bytes=1 << 16,
                     max_memory_value_bytes=1 << 16, max_depth=4)
    assert await stage(envelope("call", "alice", "bob.echo", data={"topic": "x"})) is None
    bad = await stage(envelope("call", "alice", "bob.echo", data={"title": "x"}))
    assert bad is not None and bad.code == "bad_input" and "topic" in bad.reason
    deep = await stage(envelope("call", "alice", "bob.echo",
                                data={"topic": {"a": {"b": {"c": {"d": {"e": 1}}}}}}))
    assert deep is not None and deep.rule == "hub.max_depth"


async def test_guard_holds_the_chain_the_hop_limit_and_open_calls(policy: PolicyFile) -> None:
    settings = policy.current().hub
    calls = FakeCalls({"c1": Call("c1", "alice", "bob", "echo", "conv-1", hops=0)})
    stage = Guard(Containment(settings), settings, policy, calls)
    nested = envelope("call", "bob", "carol.x", parent="c1", hops=1)
    assert await stage(nested) is None
    broken = await stage(envelope("call", "bob", "carol.x", parent="c1", hops=5))
    assert broken is not None and broken.code == "broken_chain"
    too_deep = await stage(envelope("call", "alice", "bob.echo", hops=4))
    assert too_deep is not None and too_deep.rule == "hub.max_hops"
    calls.open["alice"] = 2
    busy = await stage(envelope("call", "alice", "bob.echo"))
    assert busy is not None and busy.code == "too_many_open_calls"
