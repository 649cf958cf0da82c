"""Storage: the contract (Log, Consumer, KV, Store) and `open_store`, which picks the engine.

    async with open_store("sqlite:///var/lib/interlink/mesh.db") as store:
        log = await store.log("calls")

Nothing outside this package names an engine: code takes a `Store` and uses the contract.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import unquote, urlsplit

from interlink.errors import ConfigError
from interlink.store.contract import (
    KV,
    AppendResult,
    Consumer,
    ConsumerInfo,
    DeliverPolicy,
    KVEntry,
    Log,
    LogMessage,
    Store,
)
from interlink.store.sqlite import SqliteStore

__all__ = [
    "KV",
    "AppendResult",
    "Claim",
    "Consumer",
    "ConsumerInfo",
    "DeliverPolicy",
    "KVEntry",
    "Log",
    "LogMessage",
    "Store",
    "StoreEngine",
    "open_store",
]


class Claim(Protocol):
    def release(self) -> None:
        """Give the claim up (also released when the process ends)."""


class StoreEngine(Store, Protocol):
    """A Store as `open_store` returns it: not yet open; `async with` (or `open()`) opens it."""

    def claim(self, owner: str) -> Claim:
        """Claim the store for one hub process, before opening it; `owner` says who holds it.
        An engine that allows one hub only (SQLite) raises StoreClaimed if another holds it."""

    async def open(self) -> Self:
        """Open the engine (idempotent) and return it."""

    async def __aenter__(self) -> Self:
        """Open the engine and return it."""

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Close the engine."""


def open_store(url: str, **options: Any) -> StoreEngine:
    """The engine for `url`, not yet opened: use it as `async with open_store(url) as store:`.

    `sqlite:///abs/path.db` or a plain filesystem path selects SQLite (options: `synchronous`,
    `clock`, `poll_interval`); `nats://...` is reserved for the NATS JetStream engine.
    """
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "":
        return SqliteStore(Path(url).expanduser(), **options)
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url), **options)
    if scheme == "nats":
        raise ConfigError("the nats engine is not built yet: use a sqlite:/// store URL")
    raise ConfigError(f"unknown store URL {url!r}: use sqlite:///path/to/file.db")


def _sqlite_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc or not parts.path:
        raise ConfigError(f"bad SQLite store URL {url!r}: write sqlite:///absolute/path.db "
                          "(three slashes, then the path)")
    return Path(unquote(parts.path))
