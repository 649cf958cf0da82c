"""Memory: reads and compare-and-swap writes through the hub beside the same operations on a
bare store, and write-to-notification latency of a watch beside a 100 ms poller."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..home import MeshHome
from ..sdk import connect
from ..server import background_hub
from ..services.memory import MEMORY_BUCKET
from ..store import open_store
from . import Figure, Samples, latency, rate


async def bare(path: Path, ops: int, clients: int) -> dict[str, float]:
    async with open_store(f"sqlite:///{path}") as store:
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
    return {"reads": ops * clients / read_s, "writes": ops * clients / write_s}


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
    return {"reads": ops * clients / read_s, "writes": ops * clients / write_s}


async def watch_latency(home: MeshHome, running: Any, changes: int) -> tuple[Samples, Samples]:
    async with connect("w0", credential=home.credential_path("w0"), hub=running.url) as writer, \
            connect("w1", credential=home.credential_path("w1"), hub=running.url) as watcher:
        kv = await running.hub.store.kv(MEMORY_BUCKET)
        stream = await watcher.memory("bench").watch("watched")
        sent: dict[int, float] = {}
        pushed, polled = Samples(), Samples()

        async def listen() -> None:
            while len(pushed.values) < changes:
                change = await stream.get(30)
                pushed.values.append(time.perf_counter() - sent[change.value["n"]])

        async def poll() -> None:
            seen = await kv.revision()
            while len(polled.values) < changes:
                await asyncio.sleep(0.1)
                for entry in await kv.history("bench/watched"):
                    if entry.revision > seen:
                        n = json.loads(entry.value or b"{}")["value"]["n"]
                        polled.values.append(time.perf_counter() - sent[n])
                        seen = entry.revision

        tasks = [asyncio.ensure_future(listen()), asyncio.ensure_future(poll())]
        for n in range(changes):
            sent[n] = time.perf_counter()
            await writer.memory("bench").put("watched", {"n": n})
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await stream.close()
    return pushed, polled


async def run(work: Path, quick: bool = False, progress: Callable[[str], None] = print
              ) -> list[Figure]:
    ops, clients, changes = (200, 4, 60) if quick else (1000, 4, 200)
    home = MeshHome(work / "memory")
    home.init()
    for c in range(clients):
        home.add_agent(f"w{c}")
        home.grant(f"w{c}", memory={"bench": "read-write"})
    progress(f"memory: {clients} clients x {ops} reads and CAS writes, hub vs bare store")
    floor = await bare(work / "memory-bare.db", ops, clients)
    async with background_hub(home) as running:
        hub = await through_hub(home, running.url, ops, clients)
        progress(f"memory: {changes} changes, watch vs 100 ms polling")
        pushed, polled = await watch_latency(home, running, changes)
    return [rate("memory", "reads through the hub, x4", hub["reads"], "bare store reads",
                 floor["reads"], "ops/s"),
            rate("memory", "CAS writes through the hub, x4", hub["writes"],
                 "bare store CAS writes", floor["writes"], "ops/s"),
            latency("memory", "write to watcher (push)", pushed, "polling every 100 ms", polled)]
