"""Two builds of the hub side by side, in one run: is a change faster or slower?

    python -m interlink.bench.ab OTHER_SRC [--rounds N] [--large]

OTHER_SRC is the `src` folder of another checkout (e.g. `git worktree add /tmp/before HEAD~1`
then `/tmp/before/src`). Two hubs run at once, each in its own process: one from OTHER_SRC,
one from this installation, each with a callee of this installation's SDK. One caller
alternates rounds of 100 sequential calls between them, so a noisy neighbour on the machine
hits both alike; then each takes 2,000 calls with 16 in flight. Prints the medians, p99s and
the ratios this/other. Only the hub differs between the two sides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from ..home import MeshHome
from ..sdk import Mesh, connect
from ..server import HubProcess
from .calls import LARGE, SMALL, echo_mesh


async def compare(other_src: Path, rounds: int, large: bool) -> dict[str, float]:
    payload = LARGE if large else SMALL
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        log = stack.enter_context((work / "peers.log").open("wb"))
        homes: dict[str, MeshHome] = {}
        hubs: dict[str, HubProcess] = {}
        for side, src in (("other", other_src), ("this", None)):
            homes[side], hubs[side] = await echo_mesh(work / side, stack, log, hub_src=src)
        async with connect("caller", credential=homes["other"].credential_path("caller"),
                           hub=hubs["other"].url) as other, \
                connect("caller", credential=homes["this"].credential_path("caller"),
                        hub=hubs["this"].url) as this:
            meshes = {"other": other, "this": this}
            times: dict[str, list[float]] = {"other": [], "this": []}
            for mesh in meshes.values():  # warm up both
                for _ in range(50):
                    await mesh.call("echo", "echo", payload)
            for _ in range(rounds):
                for side, mesh in meshes.items():
                    for _ in range(100):
                        started = time.perf_counter()
                        await mesh.call("echo", "echo", payload)
                        times[side].append(time.perf_counter() - started)
            result: dict[str, float] = {}
            for side, samples in times.items():
                ordered = sorted(samples)
                result[f"{side}_ms"] = statistics.median(ordered) * 1000
                result[f"{side}_p99_ms"] = ordered[int(len(ordered) * 0.99)] * 1000
            for side, mesh in meshes.items():
                gate = asyncio.Semaphore(16)

                async def one(mesh: Mesh = mesh, gate: asyncio.Semaphore = gate) -> None:
                    async with gate:
                        await mesh.call("echo", "echo", SMALL)

                started = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(2000)))
                result[f"{side}_per_s"] = 2000 / (time.perf_counter() - started)
            return result
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m interlink.bench.ab", description=(
        "Run a hub of another build beside this one and compare calls through both."))
    parser.add_argument("other_src", type=Path, help="the src folder of the other checkout")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 100 calls per side")
    parser.add_argument("--large", action="store_true", help="64 KiB payloads, not 100 B")
    args = parser.parse_args()
    if not (args.other_src / "interlink").is_dir():
        parser.error(f"{args.other_src} holds no interlink package: give a checkout's src")
    r = asyncio.run(compare(args.other_src, args.rounds, args.large))
    print(f"round trip: other {r['other_ms']:.2f} ms (p99 {r['other_p99_ms']:.1f}), "
          f"this {r['this_ms']:.2f} ms (p99 {r['this_p99_ms']:.1f}): "
          f"this/other {r['this_ms'] / r['other_ms']:.3f}x")
    print(f"throughput x16: other {r['other_per_s']:.0f} calls/s, this {r['this_per_s']:.0f} "
          f"calls/s: this/other {r['this_per_s'] / r['other_per_s']:.3f}x")


if __name__ == "__main__":
    main()
