"""Noisy neighbour: do unrelated agents notice one agent flooding or failing?

The hub runs in its own process. A quiet pair (a caller and a worker, another process) makes
sequential calls; its p50 and p99 are measured first alone, then while a noisy agent floods
(publishes as fast as the hub lets it to a topic its own durable handler consumes, so its acks
matter) and a failing agent's skill raises on every call from a fourth agent. Printed: the
quiet pair's p99 ratio (noisy / quiet, target ≤ 1.2), how many of the flooder's publishes the
hub refused (its data rate limit at work), and whether every event the flooder got was acked
(its acks have their own budget, so they must all get through).

    .venv/bin/python reliability/noisy.py [--calls 1500] [--rate ENVELOPES_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from interlink.server import HubProcess


def make_home(root: Path, rate: float | None) -> None:
    from interlink.home import MeshHome
    home = MeshHome(root)
    home.init()
    for name, calls in {"caller": ["worker.echo"], "worker": [], "noisy": [],
                        "breaker": ["failing.work"], "failing": []}.items():
        home.add_agent(name, calls=calls)
    home.grant("noisy", publish=["flood.*"], subscribe=["flood.*"])
    if rate is not None:  # the operator's lever: a tighter limit for the known noisy agent
        policy = home.load_policy()
        policy.agents["noisy"].rate = rate
        home.save_policy(policy)


async def quiet_pair(home: Path, url: str, calls: int) -> list[float]:
    from interlink import Agent, SkillContext, connect
    worker = Agent("worker", credential=home / "agents" / "worker.cred", hub=url)

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return req

    async with worker, connect("caller", credential=home / "agents" / "caller.cred",
                               hub=url) as caller:
        for _ in range(50):
            await caller.call("worker", "echo", {"warm": 1})
        times = []
        for i in range(calls):
            started = time.perf_counter()
            await caller.call("worker", "echo", {"i": i})
            times.append((time.perf_counter() - started) * 1000)
        return times


async def noise(home: Path, url: str, seconds: float, out: Path) -> None:
    """The flooder and the failing agent, until `seconds` pass."""
    from interlink import Agent, CallError, Event, EventContext, GateDenied, SkillContext, connect
    noisy = Agent("noisy", credential=home / "agents" / "noisy.cred", hub=url)
    failing = Agent("failing", credential=home / "agents" / "failing.cred", hub=url)
    seen: set[int] = set()
    stats = {"published": 0, "refused": 0, "handled": 0, "calls_failed": 0}

    @noisy.on_event("flood.*", durable="flood")
    async def handle(ctx: EventContext, event: Event) -> None:
        seen.add(event.seq)
        stats["handled"] += 1

    @failing.skill("work")
    async def work(ctx: SkillContext, req: Any) -> None:
        raise RuntimeError("always broken")

    end = time.monotonic() + seconds
    async with noisy, failing, connect("noisy", credential=home / "agents" / "noisy.cred",
                                       hub=url) as flooder, \
            connect("breaker", credential=home / "agents" / "breaker.cred", hub=url) as b:
        async def flood() -> None:
            while time.monotonic() < end:
                try:
                    await flooder.publish("flood.x", {"pad": "x" * 200})
                    stats["published"] += 1
                except GateDenied:
                    stats["refused"] += 1

        async def fail() -> None:
            while time.monotonic() < end:
                try:
                    await b.call("failing", "work", {})
                except (CallError, GateDenied):
                    stats["calls_failed"] += 1

        await asyncio.gather(flood(), flood(), fail())
        info_deadline = time.monotonic() + 30  # let the handler catch up and ack
        while stats["handled"] < stats["published"] and time.monotonic() < info_deadline:
            await asyncio.sleep(0.2)
    out.write_text(json.dumps(stats))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--noise":
        import logging
        logging.disable(logging.CRITICAL)  # the failing skill's tracebacks are the point
        _, _, home, url, seconds, out = sys.argv
        asyncio.run(noise(Path(home), url, float(seconds), Path(out)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=None,
                        help="agents.noisy.rate for the run (default: the hub's "
                             "rate_per_agent)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="interlink-noisy-"))
    root = work / "home"
    make_home(root, args.rate)
    hub = HubProcess(root, log=work / "hub.log")
    hub.start()
    url = hub.url
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        quiet = asyncio.run(quiet_pair(root, url, args.calls))
        quiet_seconds = sum(quiet) / 1000
        stats_file = work / "noise.json"
        noisy_proc = subprocess.Popen([sys.executable, __file__, "--noise", str(root), url,
                                       str(quiet_seconds * 1.5 + 5), str(stats_file)], env=env)
        time.sleep(2.0)  # the flood is on
        loud = asyncio.run(quiet_pair(root, url, args.calls))
        noisy_proc.wait(quiet_seconds * 3 + 90)
    finally:
        hub.stop()
    stats = json.loads(stats_file.read_text())

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1]

    ratio = p(loud, 99) / p(quiet, 99)
    print(f"quiet pair alone:      p50 {statistics.median(quiet):6.2f} ms  p99 "
          f"{p(quiet, 99):6.2f} ms")
    print(f"with a noisy neighbour: p50 {statistics.median(loud):6.2f} ms  p99 "
          f"{p(loud, 99):6.2f} ms   (p99 ratio {ratio:.2f}x, target <= 1.2x)")
    print(f"flooder: {stats['published']} published, {stats['refused']} refused by its rate "
          f"limit, {stats['handled']} handled and acked; failing agent: "
          f"{stats['calls_failed']} calls failed fast")
    print(json.dumps({"p50_quiet": statistics.median(quiet), "p99_quiet": p(quiet, 99),
                      "p50_noisy": statistics.median(loud), "p99_noisy": p(loud, 99),
                      "p99_ratio": ratio, **stats}))
    acks_ok = stats["handled"] >= stats["published"]
    if not acks_ok:
        print("FAILED: the flooder's handler did not get every event it published acked")
    return 0 if acks_ok else 1


if __name__ == "__main__":
    sys.exit(main())
