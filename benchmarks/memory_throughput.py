"""Shared memory: read and compare-and-swap write throughput through the hub, and
write-to-watch-notification latency, each beside a baseline measured in the same run.

    python benchmarks/memory_throughput.py [--ops 1000] [--clients 4] [--changes 200]

Throughput through the hub is the whole path (signed envelope, gate with grants and
validation, store, audit record, answer) from `--clients` agents at once, each doing its own
operations back to back; the baseline is the same operations straight on an SQLite store in
this process, with no hub, no security and no audit: the floor.

Watch latency: a writer changes a key every 10 ms through the hub; a watcher's pushed
notification is timed from just before the write, beside a poller reading the hub's own store
every 100 ms (what agents do without watches).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from interlink import connect
from interlink.home import MeshHome
from interlink.server import background_hub
from interlink.services.memory import MEMORY_BUCKET
from interlink.store import open_store


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


async def direct(tmp: Path, ops: int, clients: int) -> dict[str, float]:
    """The floor: the same reads and CAS writes on a bare store in this process."""
    async with open_store(f"sqlite:///{tmp / 'direct.db'}") as store:
        kv = await store.kv("bench")
        value = json.dumps({"value": {"n": 0, "pad": "x" * 100}}).encode()
        revisions = [await kv.put(f"k{c}", value) for c in range(clients)]

        async def reads(c: int) -> None:
            for _ in range(ops):
                await kv.get(f"k{c}")

        async def writes(c: int) -> None:
            revision = revisions[c]
            for _ in range(ops):
                revision = await kv.update(f"k{c}", value, expect=revision)

        began = time.perf_counter()
        await asyncio.gather(*(reads(c) for c in range(clients)))
        read_s = time.perf_counter() - began
        began = time.perf_counter()
        await asyncio.gather(*(writes(c) for c in range(clients)))
        write_s = time.perf_counter() - began
    return {"reads_per_s": ops * clients / read_s, "cas_writes_per_s": ops * clients / write_s}


async def through_hub(home: MeshHome, url: str, ops: int, clients: int) -> dict[str, float]:
    meshes = [connect(f"w{c}", credential=home.credential_path(f"w{c}"), hub=url)
              for c in range(clients)]
    for mesh in meshes:
        await mesh.__aenter__()
    try:
        spaces = [mesh.memory("bench") for mesh in meshes]
        revisions = [await spaces[c].put(f"k{c}", {"n": 0, "pad": "x" * 100})
                     for c in range(clients)]

        async def reads(c: int) -> None:
            for _ in range(ops):
                await spaces[c].get(f"k{c}")

        async def writes(c: int) -> None:
            revision = revisions[c]
            for n in range(ops):
                revision = await spaces[c].update(f"k{c}", {"n": n, "pad": "x" * 100},
                                                  expect=revision)

        began = time.perf_counter()
        await asyncio.gather(*(reads(c) for c in range(clients)))
        read_s = time.perf_counter() - began
        began = time.perf_counter()
        await asyncio.gather(*(writes(c) for c in range(clients)))
        write_s = time.perf_counter() - began
    finally:
        for mesh in meshes:
            await mesh.aclose()
    return {"reads_per_s": ops * clients / read_s, "cas_writes_per_s": ops * clients / write_s}


async def watch_latency(home: MeshHome, running: Any, changes: int) -> dict[str, Any]:
    async with connect("w0", credential=home.credential_path("w0"), hub=running.url) as writer, \
            connect("w1", credential=home.credential_path("w1"), hub=running.url) as watcher:
        kv = await running.hub.store.kv(MEMORY_BUCKET)
        stream = await watcher.memory("bench").watch("watched")
        sent: dict[int, float] = {}
        pushed: list[float] = []
        polled: list[float] = []

        async def listen() -> None:
            while len(pushed) < changes:
                change = await stream.get(30)
                pushed.append(time.perf_counter() - sent[change.value["n"]])

        async def poll() -> None:
            seen = await kv.revision()
            while len(polled) < changes:
                await asyncio.sleep(0.1)
                for entry in await kv.history("bench/watched"):
                    if entry.revision > seen:
                        n = json.loads(entry.value or b"{}")["value"]["n"]
                        polled.append(time.perf_counter() - sent[n])
                        seen = entry.revision

        tasks = [asyncio.ensure_future(listen()), asyncio.ensure_future(poll())]
        for n in range(changes):
            sent[n] = time.perf_counter()
            await writer.memory("bench").put("watched", {"n": n})
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await stream.close()
    return {"watch (push)": summary(pushed), "poll 100 ms": summary(polled)}


async def run(ops: int, clients: int, changes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = MeshHome(root / "home")
        home.init()
        for c in range(max(clients, 2)):
            home.add_agent(f"w{c}")
            home.grant(f"w{c}", memory={"bench": "read-write"})
        floor = await direct(root, ops, clients)
        async with background_hub(home) as running:
            hub = await through_hub(home, running.url, ops, clients)
            latency = await watch_latency(home, running, changes)
    return {"direct store": floor, "through the hub": hub, **latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000, help="operations per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args.ops, args.clients, args.changes))
    floor, hub = result["direct store"], result["through the hub"]
    print(f"{args.clients} clients x {args.ops} operations each, one process, loopback")
    print(f"{'':<18}{'reads/s':>12}{'CAS writes/s':>15}")
    for name, row in (("direct store", floor), ("through the hub", hub)):
        print(f"{name:<18}{row['reads_per_s']:>12.0f}{row['cas_writes_per_s']:>15.0f}")
    print(f"{'hub / direct':<18}{hub['reads_per_s'] / floor['reads_per_s']:>12.3f}"
          f"{hub['cas_writes_per_s'] / floor['cas_writes_per_s']:>15.3f}")
    print(f"write-to-notification latency, {args.changes} changes one every 10 ms:")
    push = result["watch (push)"]["median_ms"]
    for name in ("watch (push)", "poll 100 ms"):
        row = result[name]
        print(f"  {name:<16}median {row['median_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms"
              f"   {row['median_ms'] / push:6.1f}x push")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
