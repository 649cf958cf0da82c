"""The containment ledger of hubs sharing a store: conversation budgets and the workflow each
conversation follows, counted once for the whole mesh in the `containment` bucket.

A conversation spread over several hubs is charged against one budget (compare-and-swap on
`budget/<conversation>`), and follows the workflow fixed by the first call any hub saw
(`workflow/<conversation>`, created once: the first hub wins, every other hub reads it). The
entries live `LEDGER_SECONDS` after their last change, so the bucket does not grow without end.
"""

from __future__ import annotations

import json

from ..errors import KeyExists, RevisionMismatch, StoreError
from ..store import KV

CONTAINMENT_BUCKET = "containment"
LEDGER_SECONDS = 24 * 3600.0
"""A conversation idle this long starts counting afresh (as on one hub, whose memory of
conversations is bounded too)."""


class StoreLedger:
    def __init__(self, kv: KV, *, seconds: float = LEDGER_SECONDS) -> None:
        self.kv = kv
        self.seconds = seconds
        self._known: dict[str, tuple[int, tuple[int, float]]] = {}
        """A cache: the revision and spending last written or read here, per conversation
        (one round trip a message while no other hub writes the same conversation)."""

    async def spend(self, conversation: str, messages: int, tokens: float
                    ) -> tuple[int, float]:
        key = f"budget/{conversation}"
        known = self._known.pop(conversation, None)
        for _ in range(64):
            if known is None:  # a new conversation, most likely: create it outright
                spent = (messages, tokens)
                try:
                    revision = await self.kv.create(key, _dump(spent), ttl=self.seconds)
                except KeyExists:
                    known = await self._read(key)
                    continue
            else:
                revision, was = known
                spent = (was[0] + messages, was[1] + tokens)
                try:
                    revision = await self.kv.update(key, _dump(spent), expect=revision,
                                                    ttl=self.seconds)
                except RevisionMismatch:  # another hub counted meanwhile
                    known = await self._read(key)
                    continue
            if len(self._known) >= 10_000:
                self._known.clear()
            self._known[conversation] = (revision, spent)
            return spent
        raise StoreError(f"the budget of conversation {conversation} is changing too fast to "
                         "count; retry")

    async def _read(self, key: str) -> tuple[int, tuple[int, float]] | None:
        entry = await self.kv.get(key)
        if entry is None or entry.value is None:
            return None
        was = json.loads(entry.value)
        return entry.revision, (int(was["m"]), float(was["t"]))

    async def fix_workflow(self, conversation: str, workflow: str) -> str:
        key = f"workflow/{conversation}"
        try:
            await self.kv.create(key, workflow.encode(), ttl=self.seconds)
            return workflow
        except KeyExists:
            entry = await self.kv.get(key)
            return (entry.value or b"").decode() if entry is not None else workflow


def _dump(spent: tuple[int, float]) -> bytes:
    return json.dumps({"m": spent[0], "t": spent[1]}, separators=(",", ":")).encode()
