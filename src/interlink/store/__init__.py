"""Storage: the contract (Log, Consumer, KV, Store) and `open_store`, which picks the engine.

    async with open_store("sqlite:///var/lib/interlink/mesh.db") as store:
        log = await store.log("calls")

Nothing outside this package names an engine: code takes a `Store` and uses the contract.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qs, unquote, urlsplit

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

    shared: bool
    """Whether other processes reach this store without going through a claim (a server such
    as JetStream): a hub on it takes a lease in the store instead (`services/lease.py`)."""

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
    `clock`, `poll_interval`, `group_commit`); `nats://HOST:PORT[,HOST:PORT…]` (or `tls://…`
    for TLS) selects NATS JetStream, with options in the query string or as keywords:
    `replicas`, `prefix`, `tls_ca`, `tls_cert`, `tls_key` (`group_commit` means nothing there:
    every write returns once the server stored it).
    """
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "":
        return SqliteStore(Path(url).expanduser(), **options)
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url), **options)
    if scheme in ("nats", "tls"):
        return _jetstream(url, scheme, options)
    raise ConfigError(f"unknown store URL {url!r}: use sqlite:///path/to/file.db or "
                      "nats://host:4222")


_NATS_OPTIONS = {"replicas": int, "prefix": str, "tls_ca": str, "tls_cert": str, "tls_key": str}


def _jetstream(url: str, scheme: str, options: dict[str, Any]) -> StoreEngine:
    parts = urlsplit(url)
    hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
    if not hosts or parts.path not in ("", "/"):
        raise ConfigError(f"bad NATS store URL {url!r}: write nats://host:port (several "
                          "servers separated by commas, options as ?replicas=3&prefix=IL)")
    found: dict[str, Any] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        kind = _NATS_OPTIONS.get(name)
        if kind is None:
            raise ConfigError(f"unknown option {name!r} in the NATS store URL {url!r}: "
                              f"use {', '.join(_NATS_OPTIONS)}")
        try:
            found[name] = kind(values[-1])
        except ValueError:
            raise ConfigError(f"option {name}={values[-1]!r} in {url!r} must be "
                              f"{kind.__name__}") from None
    options = {k: v for k, v in options.items() if k != "group_commit"}
    from interlink.store.jetstream import JetStreamStore
    try:
        return JetStreamStore([f"{scheme}://{h}" for h in hosts], **{**found, **options})
    except TypeError as exc:
        raise ConfigError(f"bad option for the NATS store: {exc}") from None


def _sqlite_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc or not parts.path:
        raise ConfigError(f"bad SQLite store URL {url!r}: write sqlite:///absolute/path.db "
                          "(three slashes, then the path)")
    return Path(unquote(parts.path))
