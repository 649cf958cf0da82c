"""The crash loop, short: a real hub process SIGKILLed at seeded random moments while calls,
events and CAS increments go through it from other processes; nothing acknowledged may be lost
or done twice. The long run is `make reliability` (see the README). It runs on both engines:
on JetStream a killed hub's deliveries can be put back only by reclaiming its consumers when
the next hub starts (`Consumer.reclaim`); without it the CI seed lost events there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(450)
@pytest.mark.parametrize("engine", ["sqlite", "nats"])
def test_nothing_acknowledged_is_lost_or_done_twice_across_hub_kills(
        tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> None:
    store = ([] if engine == "sqlite" else
             ["--store", f"{request.getfixturevalue('nats_server')}?prefix=CRASH"])
    done = subprocess.run(
        [sys.executable, str(ROOT / "reliability" / "crash.py"), "--seed", "20261201",
         "--kills", "5", "--kill-every", "1.0", "--calls", "600", "--events", "600",
         "--increments", "200", "--deadline", "150", "--work", str(tmp_path / "run"),
         *store], capture_output=True, text=True, timeout=400)
    print(done.stdout)
    summary = json.loads(next(line for line in done.stdout.splitlines()
                              if line.startswith("{")))
    for kind in ("calls", "events", "cas"):
        assert summary[kind]["lost"] == 0, (kind, summary)
        assert summary[kind]["duplicated"] == 0, (kind, summary)
    assert summary["kills"] >= 3, "the hub was not killed while the clients worked"
    assert summary["calls"]["acknowledged"] == 600 and summary["events"]["acknowledged"] == 600
    assert summary["cas"]["counter"] == 200
    assert done.returncode == 0, done.stdout + done.stderr
