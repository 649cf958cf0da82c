"""Scale: the hub (its own process) with 10, 100 and 1,000 connected agents (another process).

For each size: the time to connect every agent, the hub's resident memory, its CPU use while
nobody sends anything, and call throughput (one caller, 8 calls in flight, to agents picked at
random among those connected). Printed as figures and as ratios against the 10-agent run,
all in the same run.

    .venv/bin/python benchmarks/scale.py [--sizes 10,100,1000] [--calls 2000]

Targets (../shared/DESIGN.md): hub RSS at 1,000 agents ≤ 300 MB; throughput at 1,000 ≥ 90% of
the throughput at 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlink import Agent, SkillContext, connect
from interlink.home import MeshHome
from interlink.identity import CredentialFile, b64e
from interlink.policy import AgentGrants
from interlink.server import HubProcess


def enrol(home: MeshHome, names: list[str]) -> None:
    """Many agents at once (one policy write), each with a key and a hub-signed credential."""
    hub = home.hub_key()
    policy = home.load_policy()
    url = home.hub_url(policy)
    for name in [*names, "caller"]:
        private = Ed25519PrivateKey.generate()
        CredentialFile(credential=hub.issue(name, private.public_key()),
                       private_key=b64e(private.private_bytes_raw()), hub_url=url,
                       hub_public_key=hub.public_b64).save(home.credential_path(name))
        policy.agents[name] = AgentGrants()
    policy.agents["caller"] = AgentGrants(calls=["a*.echo"])
    policy.hub.rate_per_agent = 1_000_000
    policy.hub.rate_burst = 1_000_000
    home.save_policy(policy)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def agents_process(home: Path, url: str, names: list[str], ready: Path) -> None:
    """Connect every agent (each its own WebSocket and skill), then serve until killed."""
    agents = []
    for name in names:
        agent = Agent(name, credential=home / "agents" / f"{name}.cred", hub=url)

        @agent.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        agents.append(agent)
    started = time.monotonic()
    for i in range(0, len(agents), 50):
        await asyncio.gather(*(a.start() for a in agents[i:i + 50]))
    ready.write_text(json.dumps({"connect_seconds": time.monotonic() - started}))
    await asyncio.Event().wait()


async def throughput(home: Path, url: str, names: list[str], calls: int) -> float:
    rng = random.Random(1)
    async with connect("caller", credential=home / "agents" / "caller.cred", hub=url) as mesh:
        for name in names[:5]:
            await mesh.call(name, "echo", {"warm": True})
        semaphore = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with semaphore:
                await mesh.call(rng.choice(names), "echo", {"i": i})

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return calls / (time.perf_counter() - started)


def measure(size: int, calls: int, work: Path) -> dict[str, float]:
    root = work / f"home-{size}"
    home = MeshHome(root)
    home.init()
    names = [f"a{i:04d}" for i in range(size)]
    enrol(home, names)
    hub = HubProcess(root, log=work / f"hub-{size}.log")
    hub.start()
    url = hub.url
    assert hub.proc is not None
    pid = hub.proc.pid
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    agents: subprocess.Popen[bytes] | None = None
    try:
        ready = work / f"ready-{size}"
        agents = subprocess.Popen([sys.executable, __file__, "--agents", str(root), url,
                                   ",".join(names), str(ready)], env=env)
        while not ready.exists():
            if agents.poll() is not None:
                raise RuntimeError("the agents process died")
            time.sleep(0.1)
        connect_seconds = json.loads(ready.read_text())["connect_seconds"]
        time.sleep(2.0)  # let start-up work settle
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        time.sleep(5.0)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        rate = asyncio.run(throughput(root, url, names, calls))
        return {"agents": size, "connect_s": connect_seconds, "rss_mb": rss_mb(pid),
                "idle_cpu": idle_cpu, "calls_per_s": rate}
    finally:
        if agents is not None and agents.poll() is None:
            agents.kill()
            agents.wait(20)
        hub.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--agents":
        _, _, home, url, names, ready = sys.argv
        asyncio.run(agents_process(Path(home), url, names.split(","), Path(ready)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="interlink-scale-"))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args.calls, work)
        rows.append(row)
        print(f"{size:>5} agents: connected in {row['connect_s']:6.2f}s, hub RSS "
              f"{row['rss_mb']:6.1f} MB, idle CPU {100 * row['idle_cpu']:5.1f}%, "
              f"{row['calls_per_s']:7.0f} calls/s", flush=True)
    base = rows[0]
    for row in rows[1:]:
        print(f"{row['agents']} vs {base['agents']} agents: throughput "
              f"{row['calls_per_s'] / base['calls_per_s']:.2f}x, RSS "
              f"{row['rss_mb'] / base['rss_mb']:.2f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
