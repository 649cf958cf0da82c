"""The attack suite's scoreboard: each scenario records whether the attack was stopped and
whether its benign twin still worked; the run ends with utility and attack success rate."""

from __future__ import annotations

from typing import Any

import pytest

RESULTS: dict[str, dict[str, bool]] = {}


@pytest.fixture
def score() -> Any:
    def record(scenario: str, *, attack_stopped: bool | None = None,
               benign_ok: bool | None = None) -> None:
        entry = RESULTS.setdefault(scenario, {})
        if attack_stopped is not None:
            entry["attack_stopped"] = entry.get("attack_stopped", True) and attack_stopped
        if benign_ok is not None:
            entry["benign_ok"] = entry.get("benign_ok", True) and benign_ok
    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    attacks = [r["attack_stopped"] for r in RESULTS.values() if "attack_stopped" in r]
    twins = [r["benign_ok"] for r in RESULTS.values() if "benign_ok" in r]
    write = terminalreporter.write_line
    write("")
    write("attack suite:")
    for name, entry in sorted(RESULTS.items()):
        attack = {True: "stopped", False: "SUCCEEDED"}.get(entry.get("attack_stopped"), "-")
        twin = {True: "works", False: "BLOCKED"}.get(entry.get("benign_ok"), "-")
        write(f"  {name:<44} attack {attack:<10} benign twin {twin}")
    if twins:
        write(f"utility (benign twins that succeed): {sum(twins)}/{len(twins)} = "
              f"{100 * sum(twins) / len(twins):.0f}%")
    if attacks:
        succeeded = len(attacks) - sum(attacks)
        write(f"attack success rate: {succeeded}/{len(attacks)} = "
              f"{100 * succeeded / len(attacks):.0f}%")
