"""Lifecycle: opening by URL, closing, and what a closed store does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from interlink.errors import ConfigError, StoreClosed, StoreError
from interlink.store import Store, open_store

from .conftest import Fresh, MakeStore


async def test_every_operation_raises_store_closed_after_aclose(make_store: MakeStore,
                                                               fresh: Fresh) -> None:
    """After aclose() (twice is fine) every operation raises StoreClosed."""
    store = await make_store()
    log = await store.log(fresh("orders"))
    consumer = await log.consumer(fresh("c"))
    kv = await store.kv(fresh("kv"))
    assert (await log.append("orders.eu", b"")).seq == 1
    await store.aclose()
    await store.aclose()
    for operation in (lambda: store.log(fresh("orders")), lambda: store.kv(fresh("kv")),
                      lambda: log.append("orders.eu", b""), log.read, log.last_seq,
                      consumer.fetch, lambda: consumer.ack(1), consumer.info,
                      lambda: kv.get("k"), lambda: kv.put("k", b"v"), kv.keys):
        with pytest.raises(StoreClosed):
            await operation()
    with pytest.raises(StoreClosed):
        kv.watch()


async def test_closing_releases_waiting_fetch_and_wait_for(make_store: MakeStore,
                                                           fresh: Fresh) -> None:
    """Closing the store makes a waiting fetch() and wait_for() raise StoreClosed at once."""
    store = await make_store()
    log = await store.log(fresh("orders"))
    consumer = await log.consumer(fresh("c"))
    waiters = [asyncio.ensure_future(consumer.fetch(timeout=10.0)),
               asyncio.ensure_future(log.wait_for(0, timeout=10.0))]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    await store.aclose()
    for waiter in waiters:
        with pytest.raises(StoreClosed):
            await asyncio.wait_for(waiter, 1.0)


async def test_data_survives_close_and_reopen(make_store: MakeStore, fresh: Fresh) -> None:
    """Messages and entries written before closing are there after reopening."""
    names = fresh("orders"), fresh("kv")
    store = await make_store()
    await (await store.log(names[0])).append("orders.eu", b"kept")
    await (await store.kv(names[1])).put("k", b"kept")
    await store.aclose()
    reopened = await make_store()
    assert [m.data for m in await (await reopened.log(names[0])).read()] == [b"kept"]
    entry = await (await reopened.kv(names[1])).get("k")
    assert entry is not None and entry.value == b"kept"


@pytest.mark.parametrize("name", ["", "has.dot", "has space", "a/b", "star*", "gt>"])
async def test_invalid_log_and_bucket_names_are_refused(store: Store, name: str) -> None:
    """Log and bucket names are refused when empty or holding whitespace, dots, wildcards
    or slashes."""
    with pytest.raises(StoreError, match="invalid log name"):
        await store.log(name)
    with pytest.raises(StoreError, match="invalid bucket name"):
        await store.kv(name)


async def test_sqlite_store_opens_from_a_plain_path(tmp_path: Path) -> None:
    """open_store accepts a filesystem path (SQLite) and the durable FULL sync mode."""
    async with open_store(str(tmp_path / "plain.db"), synchronous="FULL") as store:
        assert store.engine == "sqlite"
        assert (await (await store.log("orders")).append("orders.eu", b"")).seq == 1
    assert (tmp_path / "plain.db").exists()


@pytest.mark.parametrize("url", ["redis://localhost/0", "sqlite://host/path.db",
                                 "nats://", "nats://localhost:4222/streams",
                                 "nats://localhost:4222?replica=3",
                                 "nats://localhost:4222?replicas=three"])
def test_unsupported_store_urls_raise_config_error(url: str) -> None:
    """open_store refuses engines that do not exist, malformed SQLite URLs, and NATS URLs
    with a path or an unknown or ill-typed option."""
    with pytest.raises(ConfigError):
        open_store(url)


async def test_using_a_store_before_opening_it_fails_clearly(tmp_path: Path) -> None:
    """An unopened store raises StoreError telling how to open it."""
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StoreError, match="not open"):
        await store.log("orders")
    await store.open()
    assert (await (await store.log("orders")).append("orders.eu", b"")).seq == 1
    await store.aclose()
