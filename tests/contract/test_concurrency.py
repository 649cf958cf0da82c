"""Concurrency: compare-and-swap, appends and fetches racing in one store, across store
handles on one location, and across real processes."""

from __future__ import annotations

import asyncio
import sys

from interlink.errors import RevisionMismatch
from interlink.store import KV, Log

from .conftest import Fresh, MakeStore, closing_watch

N = 40

# A separate process: says it is ready, waits for "go", then does `count` CAS increments.
_WORKER = """
import asyncio, sys
from interlink.errors import RevisionMismatch
from interlink.store import open_store

async def main(url, bucket, worker, count):
    async with open_store(url) as store:
        kv = await store.kv(bucket)
        await kv.put(f"ready/{worker}", b"")
        while await kv.get("go") is None:
            await asyncio.sleep(0.005)
        for _ in range(count):
            while True:
                entry = await kv.get("counter")
                try:
                    await kv.update("counter", str(int(entry.value) + 1).encode(),
                                    expect=entry.revision)
                    break
                except RevisionMismatch:
                    pass

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def _increment(kv: KV, key: str) -> int:
    """Add one to the counter at `key` by compare-and-swap; return how many retries it took."""
    retries = 0
    while True:
        entry = await kv.get(key)
        assert entry is not None and entry.value is not None
        await asyncio.sleep(0)  # let the other incrementers read the same revision
        try:
            await kv.update(key, str(int(entry.value) + 1).encode(), expect=entry.revision)
            return retries
        except RevisionMismatch:
            retries += 1


async def _count(kv: KV, key: str) -> int:
    entry = await kv.get(key)
    assert entry is not None and entry.value is not None
    return int(entry.value)


async def test_concurrent_cas_increments_lose_nothing(make_store: MakeStore,
                                                      fresh: Fresh) -> None:
    """N concurrent read-modify-write increments with update(expect=) end at exactly N."""
    kv = await (await make_store()).kv(fresh("kv"))
    await kv.create("counter", b"0")
    retries = await asyncio.gather(*(_increment(kv, "counter") for _ in range(N)))
    assert sum(retries) > 0
    assert await _count(kv, "counter") == N


async def test_cas_increments_from_two_stores_lose_nothing(make_store: MakeStore,
                                                           fresh: Fresh) -> None:
    """Increments racing from two store handles (two processes) on one file end at exactly N."""
    name = fresh("kv")
    first, second = await (await make_store()).kv(name), await (await make_store()).kv(name)
    await first.create("counter", b"0")
    retries = await asyncio.gather(*(_increment(first if i % 2 else second, "counter")
                                     for i in range(N)))
    assert sum(retries) > 0
    assert await _count(second, "counter") == N


async def test_appends_from_two_stores_get_distinct_sequences(make_store: MakeStore,
                                                              fresh: Fresh) -> None:
    """Appends racing from two store handles get distinct, gapless sequences."""
    name = fresh("orders")
    logs: list[Log] = [await (await make_store()).log(name), await (await make_store()).log(name)]
    results = await asyncio.gather(*(logs[i % 2].append("orders.eu", str(i).encode())
                                     for i in range(N)))
    assert sorted(r.seq for r in results) == list(range(1, N + 1))
    assert await logs[0].last_seq() == N


async def test_concurrent_fetchers_deliver_each_message_once(make_store: MakeStore,
                                                             fresh: Fresh) -> None:
    """Many fetchers of one consumer, on two store handles, hand out every message once."""
    name, group = fresh("orders"), fresh("workers")
    stores = [await make_store(), await make_store()]
    log = await stores[0].log(name)
    consumers = [await (await stores[i % 2].log(name)).consumer(group) for i in range(6)]
    delivered: list[int] = []

    async def work(index: int) -> None:
        while messages := await consumers[index].fetch(3, timeout=0.2):
            for message in messages:
                delivered.append(message.seq)
                await consumers[index].ack(message.seq)
            await asyncio.sleep(0)

    workers = asyncio.gather(*(work(i) for i in range(len(consumers))))
    for i in range(N):
        await log.append("orders.eu", str(i).encode())
        await asyncio.sleep(0)
    await workers
    assert sorted(delivered) == list(range(1, N + 1))


async def test_cas_increments_from_two_processes_lose_nothing(make_store: MakeStore,
                                                              store_url: str,
                                                              fresh: Fresh) -> None:
    """Increments racing from two real processes on one store end at exactly their sum."""
    name, each = fresh("kv"), 150
    kv = await (await make_store()).kv(name)
    await kv.create("counter", b"0")
    async with closing_watch(kv.watch("ready/")) as ready:
        workers = [await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, store_url, name, str(i), str(each)) for i in (1, 2)]
        await asyncio.wait_for(anext(ready), 10.0)
        await asyncio.wait_for(anext(ready), 10.0)
    await kv.put("go", b"")
    assert [await asyncio.wait_for(w.wait(), 20.0) for w in workers] == [0, 0]
    assert await _count(kv, "counter") == 2 * each
