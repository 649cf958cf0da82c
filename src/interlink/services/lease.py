"""The hub's lease on a shared store: one hub at a time on a store that several could reach.

The embedded SQLite store is claimed with a lock on its file (`SqliteStore.claim`). A JetStream
store is reachable by any number of hubs, but a hub still keeps state of its own in memory
(the nonce cache, topic numbering, budgets and breakers, which connections it holds, the audit
chain's head): until that state lives in the store, a second hub on the same store would accept
a replay the first refused, number events twice and fork the audit chain. So the hub takes a
lease — a key with a time-to-live in its own bucket, renewed while it runs — and a second hub
is refused, naming the first.

A hub killed without releasing its lease leaves it to expire; a hub started again on the same
machine finds the holder's process gone and takes the lease over at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Any

from ..errors import KeyExists, RevisionMismatch, StoreClaimed
from ..store import KV

log = logging.getLogger("interlink.lease")

LEASE_KEY = "lease"
LEASE_SECONDS = 10.0
"""A lease not renewed for this long lapses (a hub renews it every third of it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLease:
    def __init__(self, kv: KV, owner: str, *, seconds: float = LEASE_SECONDS) -> None:
        self.kv = kv
        self.owner = owner
        self.seconds = seconds
        self._holder = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid()}
        self._revision: int | None = None

    async def take(self, *, wait: float | None = None, standby: bool = False) -> None:
        """Take the lease. One held by another hub is waited for while it may be lapsing (up
        to `wait` seconds, default twice its life); StoreClaimed, naming the holder, as soon as
        the holder renews it (it is alive) or the wait ends. A `standby` hub waits as long as
        it takes, and takes over when the holder stops or dies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (2 * self.seconds if wait is None else wait)
        said = False
        seen: int | None = None
        value = json.dumps(self._holder).encode()
        while True:
            try:
                self._revision = await self.kv.create(LEASE_KEY, value, ttl=self.seconds)
                return
            except KeyExists:
                pass
            entry = await self.kv.get(LEASE_KEY)
            if entry is None or entry.value is None:
                continue
            holder: dict[str, Any] = json.loads(entry.value)
            if holder.get("host") == self._holder["host"] and not _alive(int(holder["pid"])):
                # its process is gone (killed): nobody will renew it
                log.info("taking over the store lease of %s (its process has ended)",
                         holder.get("owner"))
                try:
                    await self.kv.delete(LEASE_KEY, expect=entry.revision)
                except RevisionMismatch:
                    pass
                continue
            renewed = seen is not None and entry.revision != seen
            seen = entry.revision
            if standby:
                if not said:
                    log.warning("standing by: the store is leased by %s on %s; this hub "
                                "takes over when that one stops", holder.get("owner"),
                                holder.get("host"))
                    said = True
                await asyncio.sleep(min(1.0, self.seconds / 4))
                continue
            if renewed or loop.time() >= deadline:
                raise StoreClaimed(
                    f"another hub holds this store: {holder.get('owner')} on "
                    f"{holder.get('host')}; several hubs on one store are not supported yet "
                    "(stop it, or give this hub a store of its own)")
            if not said:
                log.warning("the store is leased by %s on %s; waiting up to %.0fs for it to "
                            "lapse", holder.get("owner"), holder.get("host"),
                            deadline - loop.time())
                said = True
            await asyncio.sleep(min(1.0, self.seconds / 4))

    async def holder(self) -> str | None:
        """Who holds the lease now, in words (None: nobody, or a process on this machine
        that has ended)."""
        entry = await self.kv.get(LEASE_KEY)
        if entry is None or entry.value is None:
            return None
        holder: dict[str, Any] = json.loads(entry.value)
        if holder.get("host") == self._holder["host"] and not _alive(int(holder["pid"])):
            return None
        return f"{holder.get('owner')} on {holder.get('host')}"

    async def renew(self) -> None:
        """Keep the lease (call at least every third of its life)."""
        if self._revision is None:
            return
        try:
            self._revision = await self.kv.update(LEASE_KEY, json.dumps(self._holder).encode(),
                                                  expect=self._revision, ttl=self.seconds)
        except RevisionMismatch:
            self._revision = None
            log.error("this hub lost its lease on the store (another hub took it after it "
                      "lapsed): stop one of them")

    async def release(self) -> None:
        if self._revision is None:
            return
        revision, self._revision = self._revision, None
        try:
            await self.kv.delete(LEASE_KEY, expect=revision)
        except RevisionMismatch:
            pass
