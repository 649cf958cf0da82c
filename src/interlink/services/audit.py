"""Audit: an append-only, hash-chained record of every gate decision, sealed by signed
checkpoints.

Each record holds its index `n`, the hash of the record before it (`prev`) and its own `hash`
(SHA-256 of its canonical form without `hash`). Every `checkpoint_every` records (and when the
hub stops) a checkpoint signed by the hub key seals the chain up to a record's hash. `verify`
replays the chain and names the first record that was changed, removed or reordered.

Records live in the store's `audit` log (subjects `audit.record` and `audit.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..gate.context import GateContext
from ..identity import HubKey, canonical, verify
from ..store import Log

GENESIS = "0" * 64
RECORD = "audit.record"
CHECKPOINT = "audit.checkpoint"


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


class AuditLog:
    """Writes the chain. One writer per store (the hub)."""

    def __init__(self, log: Log, hub: HubKey, *, checkpoint_every: int = 256) -> None:
        self.log = log
        self.hub = hub
        self.checkpoint_every = checkpoint_every
        self._n = 0
        self._head = GENESIS
        self._sealed = 0

    async def open(self) -> None:
        """Continue the chain where the store left it."""
        last = await self.log.last_seq()
        start = max(1, last - 4 * self.checkpoint_every)
        while True:
            batch = await self.log.read(start, subject=RECORD, limit=1000)
            if not batch:
                break
            for message in batch:
                rec = json.loads(message.data)
                self._n, self._head = rec["n"], rec["hash"]
            start = batch[-1].seq + 1
        cps = await self.log.read(max(1, last - 4 * self.checkpoint_every), subject=CHECKPOINT,
                                  limit=10_000)
        if cps:
            self._sealed = json.loads(cps[-1].data)["upto"]

    async def append(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"n": self._n + 1, "ts": round(time.time(), 6), "event": event, **fields,
                  "prev": self._head}
        record["hash"] = record_hash(record)
        await self.log.append(RECORD, canonical(record))
        self._n, self._head = record["n"], record["hash"]
        if self._n - self._sealed >= self.checkpoint_every:
            await self.checkpoint()
        return record

    async def checkpoint(self) -> None:
        if self._n == self._sealed:
            return
        body = {"upto": self._n, "head": self._head, "ts": round(time.time(), 6),
                "hub": self.hub.id}
        body["sig"] = self.hub.sign(canonical(body))
        await self.log.append(CHECKPOINT, canonical(body))
        self._sealed = self._n

    async def record_gate(self, ctx: GateContext) -> None:
        env = ctx.env
        fields: dict[str, Any] = {
            "decision": "refused" if ctx.denial else "accepted",
            "session": ctx.session.id,
        }
        if env is not None:
            fields["envelope"] = {
                "id": env.id, "kind": env.kind, "sender": env.sender, "target": env.target,
                "parent": env.parent, "conversation": env.conversation,
                "traceparent": env.traceparent, "hops": env.hops,
                "digest": hashlib.sha256(ctx.raw).hexdigest(),
            }
        else:
            fields["frame"] = {"bytes": len(ctx.raw), "from": ctx.session.remote,
                               "agent": ctx.session.agent}
        if ctx.denial is not None:
            fields.update(ctx.denial.to_dict())
        else:
            fields["rule"] = ctx.rule
        if ctx.notes.get("audit"):
            fields["detail"] = ctx.notes["audit"]
        await self.append("gate", **fields)


@dataclass
class VerifyReport:
    records: int = 0
    checkpoints: int = 0
    sealed_upto: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsealed(self) -> int:
        return self.records - self.sealed_upto


async def verify_chain(log: Log, hub_public: Ed25519PublicKey) -> VerifyReport:
    """Replay the whole chain; report the first record changed, removed or reordered, and any
    checkpoint that does not verify."""
    report = VerifyReport()
    hashes: dict[int, str] = {}
    expected_n, prev = 1, GENESIS
    seq = 1
    while not report.problems:
        batch = await log.read(seq, subject="audit.>", limit=2000)
        if not batch:
            break
        for message in batch:
            seq = message.seq + 1
            try:
                item = json.loads(message.data)
            except ValueError:
                report.problems.append(f"log message {message.seq} is not JSON (corrupted)")
                break
            if message.subject == CHECKPOINT:
                report.checkpoints += 1
                problem = _check_checkpoint(item, hashes, hub_public)
                if problem:
                    report.problems.append(f"checkpoint at log seq {message.seq}: {problem}")
                    break
                report.sealed_upto = item["upto"]
                continue
            n = item.get("n")
            if n != expected_n:
                report.problems.append(
                    f"record {expected_n} is missing or out of order (found record {n} "
                    f"at log seq {message.seq}): records were removed or reordered")
                break
            if item.get("prev") != prev:
                report.problems.append(
                    f"record {n} does not follow record {n - 1} (its prev hash differs): "
                    "the record before it was changed, or records were reordered")
                break
            if record_hash(item) != item.get("hash"):
                report.problems.append(f"record {n} was changed after it was written "
                                       "(its content does not match its hash)")
                break
            hashes[n] = item["hash"]
            prev, expected_n = item["hash"], n + 1
            report.records += 1
    return report


def _check_checkpoint(item: dict[str, Any], hashes: dict[int, str],
                      hub_public: Ed25519PublicKey) -> str | None:
    sig = item.get("sig", "")
    body = {k: v for k, v in item.items() if k != "sig"}
    if not verify(hub_public, canonical(body), sig):
        return "its hub signature does not verify (forged or altered)"
    upto = item.get("upto")
    if hashes.get(upto) != item.get("head"):
        return f"it seals record {upto} with a hash that record {upto} does not have"
    return None


def describe_record(rec: dict[str, Any]) -> str:
    """One line for people: when, what, who, and the verdict with its rule."""
    when = time.strftime("%H:%M:%S", time.localtime(rec["ts"])) + f".{int(rec['ts'] % 1 * 1000):03d}"
    head = f"#{rec['n']:<5} {when}"
    event = rec["event"]
    if event == "delivered":
        return (f"{head} delivered call {rec['call'][:8]}… to {rec['to']} "
                f"(attempt {rec['attempt']})")
    if event == "timeout":
        return (f"{head} TIMEOUT   call {rec['call'][:8]}… {rec['caller']} → "
                f"{rec['target']}.{rec['skill']} (was {rec['state_before']})")
    if event != "gate":
        extra = {k: v for k, v in rec.items() if k not in ("n", "ts", "event", "prev", "hash")}
        return f"{head} {event:<9} {json.dumps(extra)}"
    env = rec.get("envelope") or {}
    who = f"{env.get('sender', '?')} → {env.get('target', '?')}" if env else "(undecodable frame)"
    if rec["decision"] == "accepted":
        kind, parent = env.get("kind"), env.get("parent")
        call = (f" call {env['id'][:8]}…" if kind == "call" else
                f" to {parent[:8]}…" if parent and kind in ("reply", "progress") else
                f" (within {parent[:8]}…)" if parent else "")
        return f"{head} accepted  {env.get('kind', '?'):<8} {who}{call}   [{rec.get('rule')}]"
    return (f"{head} REFUSED   {env.get('kind', '?'):<8} {who}   at {rec['stage']} "
            f"({rec['code']}): {rec['reason']}" + (f" [rule: {rec['rule']}]" if rec.get("rule")
                                                   else ""))
