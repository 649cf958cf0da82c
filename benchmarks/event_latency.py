"""Publish-to-delivery latency and publish throughput of the event bus, beside consumers that
poll the same store at a fixed interval, all measured in one run on the same events.

    python benchmarks/event_latency.py [--events 200] [--every-ms 20] [--throughput 2000]

Phase 1 (latency): a publisher sends one event every `--every-ms` through the hub (signed,
gated, committed, audited). Three consumers watch the same events at once:
  * push: a live subscription; the hub pushes each event as it is committed;
  * poll 100 ms / poll 1 s: a loop that reads the hub's own store for new events every 100 ms
    or 1 s (what agents do without a bus; reading the store directly flatters polling, since
    a real poller would also pay an API round trip).
Latency is from just before `publish()` is called to the moment the consumer has the event.

Phase 2 (throughput): `--throughput` events published with 16 in flight, timed until the
last publish is acknowledged (committed) and until the push subscriber has received them all.
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
from interlink.services.events import EVENTS_LOG
from interlink.store import Log


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


async def poller(log: Log, start: int, interval: float, sent: dict[int, float],
                 want: int, out: list[float]) -> None:
    """Read new events every `interval` seconds, as a polling agent would."""
    next_seq = start
    while len(out) < want:
        await asyncio.sleep(interval)
        for message in await log.read(next_seq, subject="bench.>", limit=10_000):
            seen = time.perf_counter()
            n = json.loads(message.data)["wire"]["body"]["message"]["parts"][0]["data"]["n"]
            out.append(seen - sent[n])
            next_seq = message.seq + 1


async def run(events: int, every: float, throughput: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = MeshHome(Path(tmp) / "home")
        home.init()
        home.add_agent("pub")
        home.add_agent("sub")
        home.grant("pub", publish=["bench.>"])
        home.grant("sub", subscribe=["bench.>"])
        async with background_hub(home) as hub, \
                connect("pub", credential=home.credential_path("pub"), hub=hub.url) as pub, \
                connect("sub", credential=home.credential_path("sub"), hub=hub.url) as sub:
            log = await hub.hub.store.log(EVENTS_LOG)
            for _ in range(50):  # warm up
                await pub.publish("bench.warmup", {"n": -1})
            stream = await sub.subscribe("bench.latency")
            sent: dict[int, float] = {}
            push: list[float] = []

            async def pusher() -> None:
                while len(push) < events:
                    event = await stream.get(30)
                    push.append(time.perf_counter() - sent[event.data["n"]])

            start = await log.last_seq() + 1
            polled: dict[str, list[float]] = {"poll 100 ms": [], "poll 1 s": []}
            tasks = [asyncio.ensure_future(pusher()),
                     asyncio.ensure_future(poller(log, start, 0.1, sent, events,
                                                  polled["poll 100 ms"])),
                     asyncio.ensure_future(poller(log, start, 1.0, sent, events,
                                                  polled["poll 1 s"]))]
            for n in range(events):
                sent[n] = time.perf_counter()
                await pub.publish("bench.latency", {"n": n})
                await asyncio.sleep(every)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await stream.close()

            firehose = await sub.subscribe("bench.firehose")
            received = 0
            done = asyncio.Event()

            async def count() -> None:
                nonlocal received
                async for _ in firehose:
                    received += 1
                    if received == throughput:
                        done.set()
                        return

            counter = asyncio.ensure_future(count())
            gate = asyncio.Semaphore(16)

            async def one(n: int) -> None:
                async with gate:
                    await pub.publish("bench.firehose", {"n": n, "pad": "x" * 200})

            began = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(throughput)))
            committed = time.perf_counter() - began
            await asyncio.wait_for(done.wait(), 60)
            delivered = time.perf_counter() - began
            await counter
    return {"push": summary(push), **{k: summary(v) for k, v in polled.items()},
            "throughput": {"events": throughput, "published_per_s": throughput / committed,
                           "delivered_per_s": throughput / delivered}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--every-ms", type=float, default=20.0)
    parser.add_argument("--throughput", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args.events, args.every_ms / 1000, args.throughput))
    print(f"{args.events} events, one every {args.every_ms:g} ms, one process, loopback; "
          "latency from publish() to the consumer having the event")
    print(f"{'':<16}{'median':>10}{'p99':>10}{'vs push (median)':>20}")
    push = result["push"]["median_ms"]
    for name in ("push", "poll 100 ms", "poll 1 s"):
        row = result[name]
        print(f"{name:<16}{row['median_ms']:>8.2f}ms{row['p99_ms']:>8.2f}ms"
              f"{row['median_ms'] / push:>19.1f}x")
    t = result["throughput"]
    print(f"throughput: {t['events']} events, 16 in flight: {t['published_per_s']:.0f} "
          f"publishes/s committed, {t['delivered_per_s']:.0f} events/s delivered to a subscriber")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
