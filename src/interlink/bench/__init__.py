"""`interlink bench`: what the mesh costs, each figure beside its baseline measured in the same
run (these machines are shared and noisy: only ratios within one run mean anything).

Sections (each a module of this package, each returning `Figure`s):

    calls    a mesh call (full gate) vs a direct a2a-sdk client -> a2a-sdk server call, and an
             outside a2a-sdk client through the hub's /a2a/{agent}; every server in its own
             process; round trip (small and 64 KiB) and throughput; interleaved rounds
    gate     call throughput with the full gate vs the security stages off (label, validate,
             guard), alternating rounds
    events   publish-to-delivery vs polling every 100 ms and 1 s; durable publish throughput
    memory   reads and CAS writes through the hub vs the bare store; watch vs 100 ms polling
    scale    10, 100 and 1,000 connected agents on one hub: its memory and call throughput
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import IO, Any


@dataclass
class Figure:
    """One measured figure beside its baseline from the same run."""

    section: str
    name: str
    unit: str                       # "ms", "calls/s", "MB", ...
    value: float                    # Interlink's median (or rate)
    baseline: str | None = None     # what it is compared with
    base: float | None = None       # the baseline's median (or rate)
    p99: float | None = None
    base_p99: float | None = None
    lower_is_better: bool = True
    note: str = ""
    target: float | None = None     # the ratio the issue asks for (value / base)

    @property
    def ratio(self) -> float | None:
        return self.value / self.base if self.base else None

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


@dataclass
class Samples:
    """Latency samples in seconds."""

    values: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.values)

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.values)
        return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def latency(section: str, name: str, ours: Samples, baseline: str, base: Samples, *,
            target: float | None = None, note: str = "") -> Figure:
    return Figure(section, name, "ms", ours.median_ms, baseline, base.median_ms,
                  ours.p99_ms, base.p99_ms, True, note, target)


def rate(section: str, name: str, ours: float, baseline: str | None, base: float | None,
         unit: str = "calls/s", *, target: float | None = None, note: str = "") -> Figure:
    return Figure(section, name, unit, ours, baseline, base, None, None, False, note, target)


class Peer:
    """A process `interlink bench` measures against (see `peers.py`): started, waited for until
    it prints `ready`, killed at the end."""

    def __init__(self, *args: str, log: IO[bytes] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "interlink.bench.peers", *args], stdout=subprocess.PIPE,
            stderr=log or subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            self.proc.kill()
            raise RuntimeError(f"benchmark peer {args[0]} did not start (exit "
                               f"{self.proc.wait()})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
