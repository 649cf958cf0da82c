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

    async def spend(self, conversation: str, messages: int, tokens: float
                    ) -> tuple[int, float]:
        key = f"budget/{conversation}"
        for _ in range(64):
            entry = await self.kv.get(key)
            if entry is None or entry.value is None:
                spent = (messages, tokens)
                try:
                    await self.kv.create(key, _dump(spent), ttl=self.seconds)
                except KeyExists:
                    continue
                return spent
            was = json.loads(entry.value)
            spent = (int(was["m"]) + messages, float(was["t"]) + tokens)
            try:
                await self.kv.update(key, _dump(spent), expect=entry.revision, ttl=self.seconds)
            except RevisionMismatch:
                continue
            return spent
        raise StoreError(f"the budget of conversation {conversation} is changing too fast to "
                         "count; retry")

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
