"""What the security stages cost: call throughput through the full gate against the same kind
of hub with the label, validate and guard stages switched off, in one run.

    python benchmarks/gate_cost.py [--calls 1000] [--concurrency 8] [--rounds 3]

Both hubs run in this process with the same agents: a caller and a callee whose skill declares
pydantic input and output schemas (so validate has real work) and whose replies carry a label
(so label has real work). Rounds alternate between the two hubs so drift on a shared machine
hits both alike; the ratio compares medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from interlink import Agent, SkillContext, connect
from interlink.home import MeshHome
from interlink.server import background_hub


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


async def run(calls: int, concurrency: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"full gate": [], "without label/validate/guard": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for full, name in ((True, "full gate"), (False, "without label/validate/guard")):
                home = MeshHome(Path(tmp) / f"home-{r}-{int(full)}")
                home.init()
                home.add_agent("shop")
                home.add_agent("buyer", calls=["shop.buy"])
                results[name].append(await throughput(home, full, calls, concurrency))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(run(args.calls, args.concurrency, args.rounds))
    print(f"{args.calls} calls per round, {args.concurrency} in flight, {args.rounds} rounds "
          "alternating, one process")
    for name, rates in results.items():
        print(f"  {name:<30} median {statistics.median(rates):7.0f} calls/s   "
              f"(rounds: {', '.join(f'{r:.0f}' for r in rates)})")
    full = statistics.median(results["full gate"])
    bare = statistics.median(results["without label/validate/guard"])
    print(f"full / without: {full / bare:.3f} (the security stages cost "
          f"{100 * (1 - full / bare):.1f}% of throughput)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
