"""Events: publish-to-delivery latency of pushed events beside consumers polling the same
store every 100 ms and every 1 s (the same events, the same run), and durable publish
throughput beside appends to the bare store (the floor under it)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from ..home import MeshHome
from ..sdk import connect
from ..server import background_hub
from ..services.events import events_log
from ..store import Log, open_store
from . import Figure, Samples, latency, rate


async def poller(log: Log, start: int, interval: float, sent: dict[int, float],
                 want: int, out: Samples) -> None:
    """Read new events every `interval` seconds, as a polling agent would."""
    next_seq = start
    while len(out.values) < want:
        await asyncio.sleep(interval)
        for message in await log.read(next_seq, subject="bench.>", limit=10_000):
            seen = time.perf_counter()
            n = json.loads(message.data)["wire"]["body"]["message"]["parts"][0]["data"]["n"]
            out.values.append(seen - sent[n])
            next_seq = message.seq + 1


async def bare_appends(path: Path, count: int, in_flight: int) -> float:
    async with open_store(f"sqlite:///{path}") as store:
        log = await store.log("bench")
        data = json.dumps({"n": 0, "pad": "x" * 200}).encode()
        gate = asyncio.Semaphore(in_flight)

        async def one(n: int) -> None:
            async with gate:
                await log.append(f"bench.firehose.{n % 8}", data)

        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - began)


async def run(work: Path, quick: bool = False, progress: Callable[[str], None] = print
              ) -> list[Figure]:
    events, every, firehose_n = (60, 0.02, 500) if quick else (200, 0.02, 2000)
    home = MeshHome(work / "events")
    home.init()
    home.add_agent("pub")
    home.add_agent("sub")
    home.grant("pub", publish=["bench.>"])
    home.grant("sub", subscribe=["bench.>"])
    progress(f"events: {events} events one every {every * 1000:g} ms; push vs polling")
    async with background_hub(home) as hub, \
            connect("pub", credential=home.credential_path("pub"), hub=hub.url) as pub, \
            connect("sub", credential=home.credential_path("sub"), hub=hub.url) as sub:
        log = await events_log(hub.hub.store, hub.hub.settings)
        for _ in range(50):  # warm up
            await pub.publish("bench.warmup", {"n": -1})
        stream = await sub.subscribe("bench.latency")
        sent: dict[int, float] = {}
        push = Samples()

        async def pusher() -> None:
            while len(push.values) < events:
                event = await stream.get(30)
                push.values.append(time.perf_counter() - sent[event.data["n"]])

        start = await log.last_seq() + 1
        fast, slow = Samples(), Samples()
        tasks = [asyncio.ensure_future(pusher()),
                 asyncio.ensure_future(poller(log, start, 0.1, sent, events, fast)),
                 asyncio.ensure_future(poller(log, start, 1.0, sent, events, slow))]
        for n in range(events):
            sent[n] = time.perf_counter()
            await pub.publish("bench.latency", {"n": n})
            await asyncio.sleep(every)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await stream.close()

        progress(f"events: durable publish throughput, {firehose_n} events, 16 in flight")
        gate = asyncio.Semaphore(16)

        async def one(n: int) -> None:
            async with gate:
                await pub.publish(f"bench.firehose.{n % 8}", {"n": n, "pad": "x" * 200})

        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(firehose_n)))
        published = firehose_n / (time.perf_counter() - began)
    floor = await bare_appends(work / "events-bare.db", firehose_n, 16)
    return [latency("events", "publish to delivery (push)", push, "polling every 100 ms", fast),
            latency("events", "publish to delivery (push)", push, "polling every 1 s", slow),
            rate("events", "durable publishes committed, x16", published,
                 "bare store appends, x16", floor, "events/s",
                 note="signed, gated, validated, audited vs one SQLite append")]
