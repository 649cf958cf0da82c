"""Nonces shared by every hub on a store: a replay refused by one hub is refused by all.

The store's `nonces` log deduplicates appends by message id within a window — exactly a nonce
cache: each envelope's nonce is appended with itself as the id, and a duplicate is a replay.
The window is twice the clock-skew window (an envelope older than the skew is refused as stale
anyway), and the log forgets what is older (`max_age`). The hub's own memory answers first,
so a replay to the same hub costs no round trip.
"""

from __future__ import annotations

from ..gate.authenticate import NonceCache
from ..store import Log, Store

NONCES_LOG = "nonces"


class SharedNonces:
    def __init__(self, cache: NonceCache, log: Log) -> None:
        self.cache = cache
        self.log = log

    @classmethod
    async def open(cls, store: Store, skew: float) -> SharedNonces:
        window = 2 * skew
        log = await store.log(NONCES_LOG, dedup_window=window, max_age=window + 1.0)
        return cls(NonceCache(skew), log)

    async def seen(self, nonce: str, now: float) -> bool:
        if self.cache.seen_here(nonce, now):
            return True
        return (await self.log.append("n", b"", msg_id=nonce)).duplicate
