"""Call round-trip time through the hub, beside a plain WebSocket echo measured in the same run.

    python benchmarks/call_rtt.py [--calls 1000] [--payload 256]

The hub path is the whole thing a user gets: the caller signs a call envelope; the hub's gate
decodes it, checks the credential, signature, freshness and nonce, authorizes it against
mesh.yaml, commits it (SQLite record + log append), audits it, and delivers it; the callee
verifies the origin signature, runs the skill, signs a reply; the hub runs the reply through the
gate, commits and audits it and delivers it; the caller verifies it. The baseline is one
WebSocket round trip of the same payload to an echo server in this process, with no security,
no storage: the floor of any hub on this transport.
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

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from interlink import Agent, SkillContext, connect
from interlink.home import MeshHome
from interlink.server import background_hub


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "mean_ms": 1000 * statistics.fmean(ordered)}


async def hub_calls(n: int, payload: dict[str, Any]) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = MeshHome(Path(tmp) / "home")
        home.init()
        home.add_agent("caller", calls=["echo.echo"])
        home.add_agent("echo")
        async with background_hub(home) as hub:
            agent = Agent("echo", credential=home.credential_path("echo"), hub=hub.url)

            @agent.skill("echo")
            async def echo(ctx: SkillContext, req: Any) -> Any:
                return req

            async with agent, connect("caller", credential=home.credential_path("caller"),
                                      hub=hub.url) as mesh:
                for _ in range(min(100, n)):
                    await mesh.call("echo", "echo", payload)
                samples = []
                for _ in range(n):
                    started = time.perf_counter()
                    await mesh.call("echo", "echo", payload)
                    samples.append(time.perf_counter() - started)
                return samples


async def websocket_echo(n: int, payload: dict[str, Any]) -> list[float]:
    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}") as ws:
            text = json.dumps(payload)
            for _ in range(min(100, n)):
                await ws.send(text)
                await ws.recv()
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                await ws.send(text)
                json.loads(await ws.recv())
                samples.append(time.perf_counter() - started)
            return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--payload", type=int, default=256, help="payload size in bytes")
    args = parser.parse_args()
    payload = {"text": "x" * args.payload}
    baseline = summary(await websocket_echo(args.calls, payload))
    through_hub = summary(await hub_calls(args.calls, payload))
    print(f"{args.calls} sequential calls, {args.payload}-byte payload, one process, loopback")
    print(f"{'':28} {'median':>9} {'p99':>9} {'mean':>9}")
    for name, row in (("plain WebSocket echo", baseline), ("call through the hub", through_hub)):
        print(f"{name:28} {row['median_ms']:8.3f}ms {row['p99_ms']:8.3f}ms "
              f"{row['mean_ms']:8.3f}ms")
    print(f"ratio hub / echo (median): {through_hub['median_ms'] / baseline['median_ms']:.1f}x")
    print(json.dumps({"baseline": baseline, "hub": through_hub}))


if __name__ == "__main__":
    asyncio.run(main())
