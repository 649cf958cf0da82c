"""Labels (parse, join, clearance) and containment state (breakers, rates, budgets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlink.gate.containment import Containment
from interlink.labels import BOTTOM, Label, LabelError
from interlink.policy import HubSettings


def test_join_only_goes_up() -> None:
    web = Label.parse({"integrity": "untrusted", "provenance": ["web"]})
    phi = Label.parse({"level": "confidential", "tags": ["phi"]})
    both = web.join(phi)
    assert both == Label("confidential", frozenset({"phi"}), "untrusted", frozenset({"web"}))
    assert web.at_most(both) and phi.at_most(both) and not both.at_most(web)
    assert BOTTOM.join(web) == web
    assert both.join(BOTTOM) == both


@pytest.mark.parametrize(("raw", "phrase"), [
    ("secret", "must be an object"),
    ({"level": "top-secret"}, "not one of"),
    ({"integrity": "maybe"}, "trusted or untrusted"),
    ({"tags": "phi"}, "list"),
    ({"confidentiality": "x"}, "unknown label fields"),
])
def test_bad_labels_say_why(raw: object, phrase: str) -> None:
    with pytest.raises(LabelError, match=phrase):
        Label.parse(raw)


def test_clearance_covers_level_and_tags() -> None:
    phi = Label.parse({"level": "confidential", "tags": ["phi"]})
    assert phi.covered_by("confidential", ["phi"]) is None
    assert "above" in (phi.covered_by("internal", ["phi"]) or "")
    assert "phi" in (phi.covered_by("restricted", []) or "")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_then_probes_then_closes() -> None:
    clock = Clock()
    guard = Containment(HubSettings(breaker_min_calls=4, breaker_window=4,
                                    breaker_failure_rate=0.5, breaker_open_seconds=5),
                        clock=clock)
    changes: list[tuple[str, str]] = []
    guard.on_change = lambda target, state: changes.append((target, state))
    for ok in (True, False, True, False):
        assert guard.admit("flaky") is None
        guard.outcome("flaky", ok)
    assert guard.breaker_state("flaky") == "open"
    assert "circuit open" in (guard.admit("flaky") or "")
    clock.now = 6
    assert guard.admit("flaky") is None          # the one probe
    assert "probed" in (guard.admit("flaky") or "")  # others wait for it
    guard.outcome("flaky", False)
    assert guard.breaker_state("flaky") == "open"
    clock.now = 12
    assert guard.admit("flaky") is None
    guard.outcome("flaky", True)
    assert guard.breaker_state("flaky") == "closed"
    assert changes == [("flaky", "open"), ("flaky", "half-open"), ("flaky", "open"),
                       ("flaky", "half-open"), ("flaky", "closed")]
    assert guard.admit("other") is None


async def test_rate_limit_and_budget() -> None:
    clock = Clock()
    guard = Containment(HubSettings(rate_per_agent=10, rate_burst=5,
                                    conversation_max_messages=3,
                                    conversation_max_tokens=100), clock=clock)
    assert all(guard.take("a") for _ in range(5))
    assert not guard.take("a")
    assert guard.take("b")           # per agent
    clock.now = 0.2                  # two tokens back at 10/s
    assert guard.take("a") and guard.take("a") and not guard.take("a")
    assert await guard.spend("c1") is None and await guard.spend("c1", tokens=50) is None
    assert "tokens" in (await guard.spend("c1", tokens=60) or "")
    assert await guard.spend("c2") is None
    said = [await guard.spend("c3") for _ in range(4)]
    assert said[:3] == [None, None, None] and "messages" in (said[3] or "")


async def test_hubs_sharing_a_ledger_count_one_budget_and_one_workflow(tmp_path: Path) -> None:
    """Two hubs' containment over one store: a conversation spread over both is charged once
    (3 messages allowed in all, not 3 per hub), and keeps the workflow the first call fixed,
    whichever hub sees the next call."""
    from interlink.services.ledger import CONTAINMENT_BUCKET, StoreLedger
    from interlink.store import open_store
    settings = HubSettings(conversation_max_messages=3, conversation_max_tokens=100)
    one, two = Containment(settings), Containment(settings)
    flows = {"review": type("Flow", (), {"entry": "writer.draft"})()}
    async with open_store(f"sqlite:///{tmp_path / 'mesh.db'}") as store:
        kv = await store.kv(CONTAINMENT_BUCKET, history=1)
        one.ledger, two.ledger = StoreLedger(kv), StoreLedger(kv)
        said = [await one.spend("c"), await two.spend("c"), await one.spend("c"),
                await two.spend("c")]
        assert said[:3] == [None, None, None] and "messages" in (said[3] or "")
        assert "tokens" in ((await two.spend("d", tokens=60) and "")
                            or await one.spend("d", tokens=60) or "")
        assert await one.workflow("w", "writer.draft", flows) == "review"
        # on the other hub a later call of that conversation does not start a new one
        assert await two.workflow("w", "editor.publish", flows) == "review"
        assert await two.workflow("x", "editor.publish", flows) is None
        assert await one.workflow("x", "writer.draft", flows) is None  # fixed: no workflow


def test_no_rate_is_set_by_default_and_an_agents_own_rate_still_applies() -> None:
    clock = Clock()
    guard = Containment(HubSettings(), clock=clock)
    assert HubSettings().rate_per_agent is None
    assert all(guard.take("busy") for _ in range(50_000))  # no cap unless the operator sets one
    assert all(guard.take("slow", rate=3) for _ in range(3)) and not guard.take("slow", rate=3)


def test_provenance_stays_bounded_and_keeps_outside_origins() -> None:
    """An agent that has talked to hundreds of agents: its label still parses, its outside
    origins are kept, and the agents beyond the bound fold into one marker."""
    from interlink.labels import MANY_AGENTS, MAX_PROVENANCE, Label
    label = Label(provenance=frozenset({"web", "a2a:https://x.example"}), integrity="untrusted")
    for i in range(500):
        label = label.join(Label(provenance=frozenset({f"agent:a{i:04d}"})))
    assert len(label.provenance) <= MAX_PROVENANCE
    assert {"web", "a2a:https://x.example", MANY_AGENTS} <= label.provenance
    assert label.integrity == "untrusted"
    assert Label.parse(label.to_dict()) == label
