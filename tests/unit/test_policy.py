"""mesh.yaml: default deny, patterns, named rules, reload, and clear errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interlink.errors import ConfigError
from interlink.policy import PolicyFile, parse_policy

POLICY = """
agents:
  drafter:
    calls: [editor.review, "research.*"]
  editor: {}
  lurker:
"""


def test_default_deny_names_the_rule() -> None:
    """Without a matching grant the decision is deny, and says which list was searched."""
    policy = parse_policy(POLICY)
    decision = policy.may_call("editor", "drafter", "draft")
    assert not decision.allowed
    assert decision.rule == "default deny: no entry in agents.editor.calls matches drafter.draft"


def test_grants_and_patterns_name_the_matching_entry() -> None:
    """An exact grant and a pattern grant allow, naming the entry that matched."""
    policy = parse_policy(POLICY)
    assert policy.may_call("drafter", "editor", "review").rule == \
        "agents.drafter.calls[0]: editor.review"
    decision = policy.may_call("drafter", "research", "search")
    assert decision.allowed and decision.rule == "agents.drafter.calls[1]: research.*"
    assert not policy.may_call("drafter", "editor", "reviewer").allowed


def test_unenrolled_agent_is_denied() -> None:
    """An agent missing from mesh.yaml may do nothing."""
    policy = parse_policy(POLICY)
    assert policy.enrolled("lurker") and not policy.enrolled("stranger")
    assert not policy.may_call("stranger", "editor", "review").allowed


@pytest.mark.parametrize("text,needle", [
    ("agents: [1, 2", "not valid YAML"),
    ("- a list", "must be a mapping"),
    ("agents:\n  Bad Name: {}\n", "agent name"),
    ("agents:\n  a:\n    calls: [nodot]\n", "agent.skill"),
    ("agents: {}\nsurprise: 1\n", "surprise"),
])
def test_bad_policy_files_say_what_is_wrong(text: str, needle: str) -> None:
    """A malformed policy file is refused with a message naming the problem."""
    with pytest.raises(ConfigError) as info:
        parse_policy(text)
    assert needle in str(info.value)


def test_reload_on_change_and_keep_last_good(tmp_path: Path) -> None:
    """The file is re-read when it changes; a broken edit keeps the last good policy."""
    path = tmp_path / "mesh.yaml"
    path.write_text(POLICY)
    now = [0.0]
    policy_file = PolicyFile(path, clock=lambda: now[0])
    assert not policy_file.current().may_call("editor", "drafter", "draft").allowed
    path.write_text(POLICY.replace("editor: {}", "editor: {calls: [drafter.draft]}"))
    os.utime(path, ns=(1, 10**18))
    now[0] += 1
    assert policy_file.current().may_call("editor", "drafter", "draft").allowed
    path.write_text("agents: [broken")
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] += 1
    assert policy_file.current().may_call("editor", "drafter", "draft").allowed
    assert policy_file.last_error and "not valid YAML" in policy_file.last_error


def test_the_configuration_reference_is_current() -> None:
    """docs/configuration.md is made from the policy models; regenerate it with
    `interlink config-reference > docs/configuration.md` when a setting changes."""
    from pathlib import Path

    from interlink.reference import configuration_reference
    committed = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert committed.rstrip("\n") == configuration_reference().rstrip("\n")
    assert "| `taint_scope` |" in committed and "| `revoked` |" in committed
