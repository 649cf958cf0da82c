"""`interlink bench` as a user runs it: the table, the JSON and the picture, each figure with a
baseline measured in the same run (a quick run: this checks the tool, not the figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import interlink

from ..helpers import env_python


@pytest.mark.timeout(300)
def test_bench_prints_figures_beside_baselines_and_writes_json_and_a_plot(
        tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "interlink", "bench", "--quick", "--sections", "calls,memory",
         "--json", str(tmp_path / "bench.json"), "--plot", str(tmp_path / "bench.png")],
        capture_output=True, text=True, timeout=280, env={**env_python(), "COLUMNS": "200"},
        cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "direct a2a-sdk call" in done.stdout and "ratio" in done.stdout
    document = json.loads((tmp_path / "bench.json").read_text())
    figures = document["figures"]
    names = {f["name"] for f in figures}
    assert {"round trip 100 B: mesh call (full gate)",
            "round trip 64 KiB: A2A client via /a2a/{agent}",
            "reads through the hub, x4"} <= names
    for figure in figures:
        assert figure["value"] > 0 and figure["base"] > 0, figure
        assert figure["ratio"] == pytest.approx(figure["value"] / figure["base"])
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_refuses_an_unknown_section() -> None:
    done = subprocess.run([sys.executable, "-m", "interlink", "bench", "--sections", "nope"],
                          capture_output=True, text=True, timeout=60, env=env_python())
    assert done.returncode == 2 and "unknown section" in done.stderr


@pytest.mark.timeout(300)
def test_the_engine_section_measures_a_hub_on_nats_beside_raw_jetstream(
        tmp_path: Path, nats_server: str) -> None:
    """`interlink bench --store nats://…` runs the engine section alone: a hub on JetStream
    beside raw nats-py publishes on the same server and beside the embedded store."""
    out = tmp_path / "engine.json"
    done = subprocess.run([sys.executable, "-m", "interlink", "bench", "--store", nats_server,
                           "--quick", "--json", str(out)], capture_output=True, text=True,
                          timeout=280, env=env_python())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())["figures"]
    assert {f["section"] for f in figures} == {"engine"}
    raw = [f for f in figures if "raw nats-py" in (f["baseline"] or "")]
    assert len(raw) == 1 and raw[0]["value"] > 0 and raw[0]["base"] > 0


@pytest.mark.timeout(300)
def test_two_hub_builds_compare_side_by_side(tmp_path: Path) -> None:
    """The A/B runner against this very build: both sides answer, ratios near 1."""
    done = subprocess.run([sys.executable, "-m", "interlink.bench.ab",
                           str(Path(interlink.__file__).parent.parent), "--rounds", "1"],
                          capture_output=True, text=True, timeout=300, env=env_python())
    assert done.returncode == 0, done.stderr
    assert "this/other" in done.stdout and "throughput x16" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "interlink.bench.ab", str(tmp_path)],
                             capture_output=True, text=True, timeout=60, env=env_python())
    assert missing.returncode == 2 and "holds no interlink package" in missing.stderr
