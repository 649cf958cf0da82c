"""Fixtures for the storage contract suite: every test runs against every engine.

To add an engine, add it to ENGINES, teach `store_url` where its fresh store lives, and list
it in CLOCKED_ENGINES if it accepts an injected `clock` (tests that need one skip otherwise).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from interlink.store import KVEntry, StoreEngine, open_store

ENGINES = ["sqlite", "sqlite-grouped", "nats"]
CLOCKED_ENGINES = {"sqlite", "sqlite-grouped"}
ENGINE_OPTIONS: dict[str, dict[str, Any]] = {"sqlite-grouped": {"group_commit": True}}
"""Options an engine is opened with: `sqlite-grouped` is SQLite as the hub runs it, writes
sharing commits (durable, and seen by other handles, at the next flush)."""


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeStore = Callable[..., Awaitable[StoreEngine]]
Fresh = Callable[[str], str]


def closing_watch(watch: AsyncIterator[KVEntry]) -> aclosing[AsyncGenerator[KVEntry, None]]:
    """Close a KV watch on leaving the block (a watch must be a closable async generator)."""
    assert isinstance(watch, AsyncGenerator)
    return aclosing(watch)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test."""
    return str(request.param)


@pytest.fixture
def store_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where this test's store lives (a fresh one per test: on NATS, streams of its own)."""
    if engine in ("sqlite", "sqlite-grouped"):
        return f"sqlite:///{tmp_path / 'store.db'}"
    if engine == "nats":
        server = request.getfixturevalue("nats_server")
        return f"{server}?prefix=T{uuid.uuid4().hex[:12]}"
    raise AssertionError(f"no store location for engine {engine!r}")


@pytest.fixture
async def make_store(engine: str, store_url: str) -> AsyncIterator[MakeStore]:
    """Open another handle on this test's store (as another process would); all are closed
    at teardown. `clock=` injects a clock, skipping the test on engines that cannot."""
    opened: list[StoreEngine] = []

    async def make(*, clock: FakeClock | None = None, **options: Any) -> StoreEngine:
        if clock is not None:
            if engine not in CLOCKED_ENGINES:
                pytest.skip(f"the {engine} engine takes no injected clock")
            options["clock"] = clock
        store = open_store(store_url, **{**ENGINE_OPTIONS.get(engine, {}), **options})
        opened.append(store)
        return await store.open()

    yield make
    for store in opened:
        await store.aclose()


@pytest.fixture
async def store(make_store: MakeStore) -> StoreEngine:
    """An open store on a fresh location, with the real clock."""
    return await make_store()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock to inject with `make_store(clock=clock)`."""
    return FakeClock()


@pytest.fixture
def fresh() -> Fresh:
    """Unique names for logs, buckets and consumers, so tests never share state."""
    tag = uuid.uuid4().hex[:8]
    counter = itertools.count(1)
    return lambda stem: f"{stem}-{tag}-{next(counter)}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that drives time with the injected clock runs only on engines that take one;
    `test_real_time.py` checks the same promises in real time on every engine."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec is not None else None
        uses_clock = "clock" in getattr(item, "fixturenames", ())
        (drop if engine is not None and uses_clock and engine not in CLOCKED_ENGINES
         else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
