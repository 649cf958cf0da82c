"""Gate: what the security stages cost. Call throughput through the full gate against the
same kind of hub with the label, validate and guard stages switched off, rounds alternating
(both hubs in this process, the same agents: a callee whose skill declares pydantic input and
output schemas, so validate has real work, and whose replies carry a label)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from ..home import MeshHome
from ..sdk import Agent, SkillContext, connect
from ..server import background_hub
from . import Figure, rate


class Order(BaseModel):
    item: str
    qty: int
    notes: list[str] = []


class Receipt(BaseModel):
    item: str
    total: float


async def throughput(home: MeshHome, full: bool, calls: int, concurrency: int) -> float:
    async with background_hub(home, full_gate=full) as hub:
        shop = Agent("shop", credential=home.credential_path("shop"), hub=hub.url)

        @shop.skill("buy", input_schema=Order, output_schema=Receipt)
        async def buy(ctx: SkillContext, order: Order) -> Receipt:
            return Receipt(item=order.item, total=order.qty * 2.5)

        async with shop, connect("buyer", credential=home.credential_path("buyer"),
                                 hub=hub.url) as buyer:
            order = {"item": "tea", "qty": 2, "notes": ["green", "loose leaf"]}
            for _ in range(50):
                await buyer.call("shop", "buy", order)
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await buyer.call("shop", "buy", order)

            began = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(calls)))
            return calls / (time.perf_counter() - began)


async def run(work: Path, quick: bool = False, progress: Callable[[str], None] = print
              ) -> list[Figure]:
    calls, rounds = (300, 2) if quick else (1000, 3)
    progress(f"gate: {calls} calls x {rounds} rounds per variant (full gate; security stages "
             "off; tracing off), 8 in flight, alternating")
    variants = ("full", "no-security", "no-tracing")
    results: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in variants:
            home = MeshHome(work / f"gate-{r}-{variant}")
            home.init()
            home.add_agent("shop")
            home.add_agent("buyer", calls=["shop.buy"])
            if variant == "no-tracing":
                policy = home.load_policy()
                policy.hub.tracing = False
                home.save_policy(policy)
            results[variant].append(await throughput(home, variant != "no-security", calls, 8))
    full = statistics.median(results["full"])
    return [rate("gate", "call throughput, full gate", full,
                 "security stages off", statistics.median(results["no-security"]),
                 note="label, validate and guard off; one process"),
            rate("gate", "call throughput, tracing to the hub's trace store", full,
                 "tracing off", statistics.median(results["no-tracing"]), target=0.9,
                 note="a span per crossing, kept in the store; one process")]
