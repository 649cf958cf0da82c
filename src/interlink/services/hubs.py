"""The roster of hubs on a shared store: which hub processes serve it now.

The embedded SQLite store is claimed with a lock on its file (`SqliteStore.claim`): one hub.
A JetStream store is reachable by any number of hubs, and they share it: every piece of state
that must agree across hubs lives in the store (nonces in a log deduplicated by nonce, topic
numbering and the audit chain appended with `expect_last`, calls, consumers, presence and
memory in their logs and buckets). What each hub keeps in memory is a cache of the store, or
about its own connections (see README "Several hubs on one store").

Each hub has a key `hubs/<id>` in the `hub` bucket with a time-to-live, renewed while it runs.
The roster answers one question at start: is this hub alone? Only a hub alone may treat what
the store says is "out for delivery" as abandoned (its fetcher is gone) and put it back at
once; a hub joining others leaves their deliveries alone (a dead peer's come back after their
ack-wait). A `standby` hub waits until no other hub is left, then starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import RevisionMismatch
from ..store import KV

log = logging.getLogger("interlink.hubs")

ROSTER_SECONDS = 10.0
"""A hub not heard from for this long is gone (each renews its key every third of it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Peer:
    id: str
    owner: str
    host: str
    pid: int
    started: float

    def __str__(self) -> str:
        return f"{self.owner} on {self.host}"


class HubRoster:
    def __init__(self, kv: KV, owner: str, *, seconds: float = ROSTER_SECONDS) -> None:
        self.kv = kv
        self.seconds = seconds
        self.id = uuid.uuid4().hex[:12]
        self._me = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
                    "started": time.time()}
        self._revision: int | None = None

    @property
    def key(self) -> str:
        return f"hubs/{self.id}"

    async def others(self) -> list[Peer]:
        """The other hubs serving this store now. A hub on this machine whose process has
        ended is dropped from the roster at once (nobody will renew it)."""
        out = []
        for entry in await self.kv.items("hubs/"):
            if entry.key == self.key or entry.value is None:
                continue
            peer: dict[str, Any] = json.loads(entry.value)
            found = Peer(entry.key.removeprefix("hubs/"), str(peer.get("owner")),
                         str(peer.get("host")), int(peer.get("pid", 0)),
                         float(peer.get("started", 0)))
            if found.host == self._me["host"] and not _alive(found.pid):
                try:
                    await self.kv.delete(entry.key, expect=entry.revision)
                except RevisionMismatch:
                    pass
                continue
            out.append(found)
        return sorted(out, key=lambda p: p.started)

    async def wait_alone(self) -> None:
        """Until no other hub serves the store (a standby's wait)."""
        said = False
        while others := await self.others():
            if not said:
                log.warning("standing by: the store is served by %s; this hub takes over "
                            "when no other is left", ", ".join(map(str, others)))
                said = True
            await asyncio.sleep(min(1.0, self.seconds / 4))

    async def join(self) -> list[Peer]:
        """Put this hub on the roster; the other hubs already on it."""
        self._revision = await self.kv.put(self.key, json.dumps(self._me).encode(),
                                           ttl=self.seconds)
        return await self.others()

    async def renew(self) -> None:
        """Stay on the roster (call at least every third of `seconds`)."""
        if self._revision is None:
            return
        self._revision = await self.kv.put(self.key, json.dumps(self._me).encode(),
                                           ttl=self.seconds)

    async def leave(self) -> None:
        if self._revision is None:
            return
        self._revision = None
        await self.kv.delete(self.key)
