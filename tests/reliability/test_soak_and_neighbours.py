"""Short versions of the soak and the noisy-neighbour runs (the long ones: `make soak`,
`.venv/bin/python reliability/noisy.py`; see the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    done = subprocess.run([sys.executable, str(ROOT / "reliability" / script), *args],
                          capture_output=True, text=True, timeout=300)
    print(done.stdout)
    summary = json.loads(next(line for line in reversed(done.stdout.splitlines())
                              if line.startswith("{")))
    return done, summary


@pytest.mark.timeout(300)
def test_a_short_soak_leaks_nothing() -> None:
    done, summary = run("soak.py", "--agents", "10", "--seconds", "20", "--every", "2")
    assert summary["errors"] == 0 and summary["calls"] > 100
    fds, tasks = summary["fds"], summary["tasks"]
    assert isinstance(fds, dict) and isinstance(tasks, dict)
    assert fds["idle_after"] <= fds["warm"]  # every connection's descriptor went back
    assert tasks["idle_after"] <= 10  # no task outlives the traffic
    assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.timeout(300)
def test_a_flooding_agents_acks_still_get_through() -> None:
    done, summary = run("noisy.py", "--calls", "300")
    assert summary["handled"] == summary["published"]
    assert done.returncode == 0, done.stdout[-2000:]
