"""The store engine a hub runs on (`interlink bench --store nats://…`): durable publishes and
calls through a hub on that engine, beside what its own client does on the same server in the
same run — for JetStream, raw nats-py publishes acknowledged by the server (the floor under
any mesh publish) — and beside the same hub on the embedded SQLite store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..home import MeshHome
from ..sdk import Agent, SkillContext, connect
from ..server import HubProcess
from . import Figure, rate

IN_FLIGHT = 16


async def _flood(count: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """`count` operations, `IN_FLIGHT` at a time: how many a second."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def guarded(n: int) -> None:
        async with gate:
            await one(n)

    began = time.perf_counter()
    await asyncio.gather(*(guarded(n) for n in range(count)))
    return count / (time.perf_counter() - began)


async def _mesh(work: Path, name: str, store_url: str | None, events: int,
                calls: int) -> tuple[float, float]:
    """(durable publishes/s, calls/s) through a hub process on `store_url` (None: embedded)."""
    home = MeshHome(work / name)
    home.init()
    home.add_agent("pub", calls=["echo.echo"])
    home.add_agent("echo")
    home.grant("pub", publish=["bench.>"])
    hub = HubProcess(home.root, args=("--store", store_url) if store_url else ())
    await asyncio.to_thread(hub.start)  # its own process, as a user runs it
    try:
        return await _through(home, hub.url, events, calls)
    finally:
        hub.stop()


async def _through(home: MeshHome, url: str, events: int, calls: int) -> tuple[float, float]:
    echo = Agent("echo", credential=home.credential_path("echo"), hub=url)

    @echo.skill("echo")
    async def answer(ctx: SkillContext, req: Any) -> Any:
        return req

    async with echo, connect("pub", credential=home.credential_path("pub"), hub=url) as pub:
        for _ in range(20):  # warm up
            await pub.publish("bench.warmup", {"n": -1})
            await pub.call("echo", "echo", {"n": -1})
        published = await _flood(events, lambda n: pub.publish(
            f"bench.firehose.{n % 8}", {"n": n, "pad": "x" * 200}))
        called = await _flood(calls, lambda n: pub.call("echo", "echo", {"n": n}))
    return published, called


async def _raw_jetstream(url: str, count: int) -> float:
    """nats-py publishing to a stream of its own on the same server, each acknowledged."""
    import json

    import nats
    from nats.js.api import StreamConfig

    from ..store.jetstream import JetStreamStore
    servers = JetStreamStore([url.split("?")[0]]).servers  # the same parsing as the engine
    nc = await nats.connect(servers=servers)
    js = nc.jetstream()
    name = f"BENCH_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    data = json.dumps({"n": 0, "pad": "x" * 200}).encode()
    try:
        return await _flood(count, lambda n: js.publish(f"{name}.firehose.{n % 8}", data))
    finally:
        await js.delete_stream(name)
        await nc.close()


async def run(work: Path, quick: bool = False, progress: Callable[[str], None] = print,
              store_url: str | None = None) -> list[Figure]:
    if not store_url:
        raise ValueError("the engine section needs --store URL (the engine to measure)")
    events, calls = (300, 200) if quick else (2000, 1000)
    shown = store_url.split("?")[0]
    progress(f"engine: raw client publishes on {shown}, {events}, {IN_FLIGHT} in flight")
    raw = await _raw_jetstream(store_url, events)
    progress(f"engine: a hub on {shown}: {events} publishes, {calls} calls")
    prefix = "B" + uuid.uuid4().hex[:8]
    separator = "&" if "?" in store_url else "?"
    published, called = await _mesh(work, "engine-nats", f"{store_url}{separator}prefix={prefix}",
                                    events, calls)
    progress(f"engine: the same hub on the embedded store: {events} publishes, {calls} calls")
    local_published, local_called = await _mesh(work, "engine-sqlite", None, events, calls)
    return [
        rate("engine", f"durable publishes x{IN_FLIGHT} through a hub on {shown}", published,
             f"raw nats-py JetStream publishes x{IN_FLIGHT}", raw, "events/s", target=0.5,
             note="signed, gated, audited vs one acknowledged publish"),
        rate("engine", f"durable publishes x{IN_FLIGHT} through a hub on {shown}", published,
             "the same hub on embedded SQLite", local_published, "events/s"),
        rate("engine", f"calls x{IN_FLIGHT} through a hub on {shown}", called,
             "the same hub on embedded SQLite", local_called),
    ]
