"""Scale: one hub (its own process) with 10, 100 and 1,000 connected agents (another process).
For each size: the time to connect them all, the hub's resident memory and its call throughput
(one caller, 8 calls in flight, to agents picked at random), as ratios against the smallest
size in the same run. Targets: RSS at 1,000 agents <= 300 MB; throughput at 1,000 >= 0.9x
the throughput at 10."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..home import MeshHome
from ..identity import CredentialFile, b64e
from ..policy import AgentGrants
from ..sdk import connect
from ..server import HubProcess
from . import Figure, Peer, rate


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
    home.save_policy(policy)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def throughput(home: Path, url: str, names: list[str], calls: int) -> float:
    rng = random.Random(1)
    async with connect("caller", credential=home / "agents" / "caller.cred", hub=url) as mesh:
        for name in names[:5]:
            await mesh.call(name, "echo", {"warm": True})
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with gate:
                await mesh.call(rng.choice(names), "echo", {"i": i})

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return calls / (time.perf_counter() - started)


async def measure(size: int, calls: int, work: Path) -> dict[str, float]:
    root = work / f"scale-{size}"
    home = MeshHome(root)
    home.init()
    names = [f"a{i:04d}" for i in range(size)]
    enrol(home, names)
    hub = HubProcess(root, log=work / f"scale-hub-{size}.log")
    with contextlib.ExitStack() as stack:
        await asyncio.to_thread(hub.start)
        stack.callback(hub.stop)
        assert hub.proc is not None
        ready = work / f"scale-ready-{size}"
        agents = await asyncio.to_thread(Peer, "agents", str(root), hub.url, ",".join(names),
                                         str(ready))
        stack.callback(agents.stop)
        connect_seconds = json.loads(ready.read_text())["connect_seconds"]
        await asyncio.sleep(2.0)  # let start-up work settle
        per_s = await throughput(root, hub.url, names, calls)
        return {"agents": size, "connect_s": connect_seconds, "rss_mb": rss_mb(hub.proc.pid),
                "calls_per_s": per_s}
    raise AssertionError("unreachable")


async def run(work: Path, quick: bool = False, progress: Callable[[str], None] = print,
              sizes: tuple[int, ...] | None = None) -> list[Figure]:
    if not os.path.exists("/proc/self/status"):
        progress("scale: skipped (needs /proc to read the hub's memory)")
        return []
    sizes = sizes or ((10, 100) if quick else (10, 100, 1000))
    calls = 400 if quick else 2000
    rows = []
    for size in sizes:
        progress(f"scale: {size} agents connected, {calls} calls")
        rows.append(await measure(size, calls, work))
    base = rows[0]
    figures = []
    for row in rows:
        n = int(row["agents"])
        label = f"{base['agents']:.0f} agents"
        figures += [
            Figure("scale", f"{n} agents: hub resident memory", "MB", row["rss_mb"], label,
                   base["rss_mb"], note=f"connected in {row['connect_s']:.2f} s"),
            rate("scale", f"{n} agents: call throughput x8", row["calls_per_s"], label,
                 base["calls_per_s"], target=0.9 if n >= 1000 else None)]
    return figures
