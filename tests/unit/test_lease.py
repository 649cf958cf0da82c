"""The hub's lease on a shared store (`services/lease.py`), on a store of the test's own."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from interlink.errors import StoreClaimed
from interlink.services.lease import LEASE_KEY, StoreLease
from interlink.store import open_store


async def test_a_lease_is_refused_while_renewed_and_taken_once_it_lapses(
        tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        kv = await store.kv("hub")
        first = StoreLease(kv, "hub one", seconds=0.6)
        await first.take()
        assert await StoreLease(kv, "probe").holder() == f"hub one on {first._holder['host']}"
        second = StoreLease(kv, "hub two", seconds=0.6)
        # the holder renews while the second waits: it is alive, so the second is refused
        waiting = second.take(wait=5)
        started = time.monotonic()
        task = asyncio.ensure_future(waiting)
        while not task.done():
            await first.renew()
            await asyncio.sleep(0.1)
        with pytest.raises(StoreClaimed, match="hub one"):
            await task
        assert time.monotonic() - started < 2
        # a holder elsewhere that stopped renewing: its lease lapses and is taken
        await kv.put(LEASE_KEY, json.dumps({"owner": "gone", "host": "elsewhere",
                                            "pid": 1}).encode(), ttl=0.5)
        await second.take(wait=5)
        entry = await kv.get(LEASE_KEY)
        assert entry is not None and json.loads(entry.value or b"{}")["owner"] == "hub two"


async def test_a_holder_on_this_machine_whose_process_ended_is_taken_over_at_once(
        tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        kv = await store.kv("hub")
        me = StoreLease(kv, "new hub")
        dead = {"owner": "killed hub", "host": me._holder["host"], "pid": 2 ** 22 + 12345}
        await kv.put(LEASE_KEY, json.dumps(dead).encode(), ttl=60)
        assert await me.holder() is None
        started = time.monotonic()
        await me.take(wait=0)
        assert time.monotonic() - started < 1
        await me.release()
        assert await kv.get(LEASE_KEY) is None
