"""Audit: an append-only, hash-chained record of every gate decision and every policy change,
sealed by signed checkpoints that are chained and counted, with the latest one also kept outside
the store.

* Each **record** holds its index `n`, the hash of the record before it (`prev`) and its own
  `hash` (SHA-256 of its canonical form without `hash`).
* A **checkpoint** (every `checkpoint_every` records, every second the hub has unsealed records,
  and when it stops) is signed by the hub key and seals the chain up to record `upto` (its
  `head` hash). Checkpoints are numbered (`k`) and chained (`prev` is the hash of the checkpoint
  before), so removing or rewriting one breaks the next.
* The **signed head**: the latest checkpoint is also written, atomically, to a file beside the
  store (`<home>/audit.head`). Cutting records or checkpoints off the store's end, or rewriting
  and re-hashing its tail, leaves a store that no longer reaches that head.
* A hub that starts on a chain whose last record is not `hub_stopped` appends `unclean_stop`
  (how many records the dead hub had not sealed) before anything else; one that finds the store
  behind its signed head refuses to start (`AuditCut`).

`verify_chain` replays all of it and names the first problem. Records live in the store's `audit`
log (subjects `audit.record` and `audit.checkpoint`).

Limit: records written after the last checkpoint (at most about a second's worth, or the tail a
killed hub left) are not yet covered by a signature; `unclean_stop` says how many there were. An
attacker who can rewrite both the store and the head file can roll both back to an older signed
head together; keep a copy of `interlink audit head` elsewhere to catch that.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import InterlinkError, RevisionMismatch, StoreUnavailable
from ..gate.context import GateContext
from ..identity import HubKey, canonical, verify
from ..store import Log

GENESIS = "0" * 64
RECORD = "audit.record"
CHECKPOINT = "audit.checkpoint"
STORE_PATIENCE = 30.0
"""How long a record waits for an unreachable store before the append fails (logged)."""
STOPS = ("hub_stopped", "unclean_stop", "audit_gap")
"""What a `hub_started` record must follow (unless it opens the chain)."""


class AuditCut(InterlinkError):
    """The store's audit chain does not reach the signed head kept outside it."""


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def checkpoint_hash(checkpoint: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(checkpoint)).hexdigest()


def read_head(path: Path | None) -> dict[str, Any] | None:
    """The signed head kept outside the store, if there is one."""
    if path is None or not path.exists():
        return None
    try:
        head = json.loads(path.read_text())
    except ValueError:
        return {"unreadable": True}
    return head if isinstance(head, dict) else {"unreadable": True}


def write_head(path: Path, checkpoint: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(canonical(checkpoint))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class AuditLog:
    """Writes the chain: one per hub; hubs sharing a store extend one chain (appends expect
    the last record and checkpoint, and catch up when another hub wrote first)."""

    def __init__(self, log: Log, hub: HubKey, *, checkpoint_every: int = 256,
                 head_path: Path | None = None,
                 flush: Callable[[], Awaitable[None]] | None = None) -> None:
        self.log = log
        self._flush = flush
        """The store's `flush`: the head file beside the store never runs ahead of it."""
        self.hub = hub
        self.checkpoint_every = checkpoint_every
        self.head_path = head_path
        self._n = 0
        self._head = GENESIS
        self._last_event: str | None = None
        self._sealed = 0
        self._k = 0
        self._cp_hash = GENESIS
        self._cp_hashes: dict[int, str] = {}
        self._record_seq = 0
        """Log sequence of the last record and checkpoint this writer knows: its next appends
        expect them (another hub on the same store may have written since: then it catches up
        and chains after that, so hubs extend one chain and never fork it)."""
        self._cp_seq = 0
        self._lock = asyncio.Lock()

    @property
    def records(self) -> int:
        return self._n

    @property
    def unsealed(self) -> int:
        return self._n - self._sealed

    async def open(self, *, accept_gap: bool = False, alone: bool = True) -> None:
        """Continue the chain where the store left it. Checks the store against the signed
        head first (AuditCut if records or checkpoints were cut off, unless `accept_gap`, which
        records the gap instead), then, `alone` on the store (no other hub writing), records
        an unclean stop if the last hub did not stop."""
        last = await self.log.last_seq()
        window = max(1, last - 4 * self.checkpoint_every)
        await self._catch_up(window)
        problem = self._against_head(window_complete=window == 1)
        if problem is not None:
            if not accept_gap:
                raise AuditCut(problem + "; `interlink audit verify` shows the chain, and "
                               "`interlink serve --accept-audit-gap` starts anyway, recording "
                               "the gap in the chain for good")
            await self.append("audit_gap", problem=problem)
        if alone and self._n and self._last_event not in ("hub_stopped", "audit_gap"):
            await self.append("unclean_stop", last_record=self._n - 0, last_sealed=self._sealed,
                              unsealed=self._n - self._sealed,
                              note="the previous hub did not stop cleanly (killed or crashed); "
                                   "its records after the last checkpoint were not sealed")

    async def _catch_up(self, start: int | None = None) -> None:
        """Read the chain from `start` (default: past what this writer knows) to its end."""
        if start is None:
            start = min(self._record_seq, self._cp_seq) + 1
        while True:
            batch = await self.log.read(start, subject="audit.>", limit=1000)
            if not batch:
                return
            for message in batch:
                item = json.loads(message.data)
                if message.subject == CHECKPOINT:
                    if message.seq <= self._cp_seq:
                        continue
                    self._k = item.get("k", self._k + 1)
                    self._cp_hash = checkpoint_hash(item)
                    self._cp_hashes[self._k] = self._cp_hash
                    self._sealed = item["upto"]
                    self._cp_seq = message.seq
                elif message.seq > self._record_seq:
                    self._n, self._head = item["n"], item["hash"]
                    self._last_event = item.get("event")
                    self._record_seq = message.seq
            start = batch[-1].seq + 1

    def _against_head(self, *, window_complete: bool) -> str | None:
        if self.head_path is None:
            return None
        head = read_head(self.head_path)
        if head is None:  # no head is "checkpoint 0": one behind the first is a crash window
            return (f"the store holds {self._k} signed audit checkpoints but the signed head "
                    f"{self.head_path} is missing") if self._k > 1 else None
        if head.get("unreadable"):
            return f"the signed audit head {self.head_path} is unreadable"
        body = {k: v for k, v in head.items() if k != "sig"}
        if not verify(self.hub.public, canonical(body), head.get("sig", "")):
            return f"the signed audit head {self.head_path} does not verify with the hub key"
        k, upto = head.get("k", 0), head.get("upto", 0)
        if self._n < upto:
            return (f"the store's audit chain ends at record {self._n}, but the signed head "
                    f"seals record {upto}: records {self._n + 1}..{upto} were cut off")
        if self._k < k:
            return (f"the store holds {self._k} audit checkpoints, but the signed head is "
                    f"checkpoint {k}: checkpoints were removed")
        if k in self._cp_hashes and self._cp_hashes[k] != checkpoint_hash(head):
            return (f"audit checkpoint {k} in the store differs from the signed head: it was "
                    "rewritten")
        if k not in self._cp_hashes and not window_complete and self._k - k > 1:
            return (f"the signed head is checkpoint {k}, far behind the store's {self._k}: the "
                    "head file was replaced with an older copy")
        return None

    async def append(self, event: str, **fields: Any) -> dict[str, Any]:
        async with self._lock:  # one record at a time: n and prev must follow the store order
            pause, waited = 0.0, 0.0
            while True:
                record = {"n": self._n + 1, "ts": round(time.time(), 6), "event": event,
                          **fields, "prev": self._head}
                record["hash"] = record_hash(record)
                try:
                    result = await self.log.append(RECORD, canonical(record),
                                                   expect_last=self._record_seq)
                except RevisionMismatch:  # another hub appended: chain after its records
                    await self._catch_up()
                    continue
                except StoreUnavailable:
                    # what happened is done; its record waits for the store (and so does
                    # the answer to whoever caused it), up to `STORE_PATIENCE`
                    if waited >= STORE_PATIENCE:
                        raise
                    pause = min(max(pause * 2, 0.25), 2.0)
                    await asyncio.sleep(pause)
                    waited += pause
                    continue
                break
            self._n, self._head, self._last_event = record["n"], record["hash"], event
            self._record_seq = result.seq
            if self._n - self._sealed >= self.checkpoint_every:
                await self._checkpoint()
            return record

    async def checkpoint(self) -> None:
        """Seal the records so far: a signed checkpoint in the store, and the same as the signed
        head beside it."""
        async with self._lock:
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        while True:
            if self._n <= self._sealed:
                return
            k = self._k + 1
            body: dict[str, Any] = {"k": k, "upto": self._n, "head": self._head,
                                    "prev": self._cp_hash, "ts": round(time.time(), 6),
                                    "hub": self.hub.id}
            body["sig"] = self.hub.sign(canonical(body))
            try:
                result = await self.log.append(CHECKPOINT, canonical(body),
                                               expect_last=self._cp_seq)
            except RevisionMismatch:  # another hub sealed meanwhile: seal after its seal
                await self._catch_up()
                continue
            break
        self._cp_seq = result.seq
        self._k, self._sealed, self._cp_hash = k, self._n, checkpoint_hash(body)
        self._cp_hashes[self._k] = self._cp_hash
        if self.head_path is not None:
            if self._flush is not None:
                await self._flush()
            write_head(self.head_path, body)

    async def record_gate(self, ctx: GateContext) -> None:
        if ctx.denial is not None and ctx.denial.code == "store_unavailable":
            return  # nothing happened, and the store that would record it is away (logged)
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
        if ctx.audit_detail:
            fields["detail"] = ctx.audit_detail
        await self.append("gate", **fields)


@dataclass
class VerifyReport:
    records: int = 0
    checkpoints: int = 0
    sealed_upto: int = 0
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    """Not breaks in the chain, but what a reader should know (unclean stops, gaps)."""
    head_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsealed(self) -> int:
        return self.records - self.sealed_upto


async def verify_chain(log: Log, hub_public: Ed25519PublicKey, *,
                       head_path: Path | None = None) -> VerifyReport:
    """Replay the whole chain: report the first record changed, removed or reordered, any
    checkpoint that does not verify or is missing, a start with no stop before it, and (given
    the signed head kept outside the store) a chain cut off before that head."""
    report = VerifyReport()
    head = read_head(head_path)  # before the store: a running hub writes the store first
    hashes: dict[int, str] = {}
    checkpoints: dict[int, str] = {}
    expected_n, prev, last_event = 1, GENESIS, None
    expected_k, prev_cp = 1, GENESIS
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
                problem = _check_checkpoint(item, hashes, hub_public, expected_k, prev_cp)
                if problem:
                    report.problems.append(f"checkpoint {expected_k} (log seq {message.seq}): "
                                           f"{problem}")
                    break
                report.checkpoints += 1
                report.sealed_upto = item["upto"]
                prev_cp = checkpoint_hash(item)
                checkpoints[expected_k] = prev_cp
                expected_k += 1
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
            event = item.get("event")
            if (event == "hub_started" and n > 1 and last_event not in STOPS
                    and not item.get("joined")):  # a hub joining others that are running
                report.problems.append(
                    f"record {n} starts a hub, but record {n - 1} is {last_event!r}, not a stop: "
                    "the record of the previous hub's stop was removed")
                break
            if event == "unclean_stop":
                report.notices.append(
                    f"record {n}: the hub before it stopped uncleanly (killed or crashed) after "
                    f"record {item.get('last_record')}; {item.get('unsealed', '?')} of its "
                    "records were not yet sealed by a checkpoint")
            if event == "audit_gap":
                report.problems.append(f"record {n}: a hub started on a cut chain and recorded "
                                       f"the gap: {item.get('problem')}")
            hashes[n] = item["hash"]
            prev, expected_n, last_event = item["hash"], n + 1, event
            report.records += 1
    if not report.problems and head_path is not None:
        problem = _check_head(head, hub_public, report, checkpoints)
        report.head_checked = head is not None
        if problem:
            report.problems.append(problem)
    return report


def _check_checkpoint(item: dict[str, Any], hashes: dict[int, str],
                      hub_public: Ed25519PublicKey, k: int, prev: str) -> str | None:
    sig = item.get("sig", "")
    body = {k: v for k, v in item.items() if k != "sig"}
    if not verify(hub_public, canonical(body), sig):
        return "its hub signature does not verify (forged or altered)"
    if item.get("k") != k:
        return (f"it is numbered {item.get('k')}, not {k}: checkpoints were removed or "
                "reordered")
    if item.get("prev") != prev:
        return "it does not follow the checkpoint before it (its prev hash differs)"
    upto = item.get("upto")
    if not isinstance(upto, int) or hashes.get(upto) != item.get("head"):
        return f"it seals record {upto} with a hash that record {upto} does not have"
    return None


def _check_head(head: dict[str, Any] | None, hub_public: Ed25519PublicKey,
                report: VerifyReport, checkpoints: dict[int, str]) -> str | None:
    if head is None:
        # The head is written just after its checkpoint commits: a hub killed between the two
        # leaves the head one checkpoint behind, and before the first seal, no head at all.
        return ("the store holds signed checkpoints but the signed head file is missing: it "
                "was removed (the chain's end cannot be checked)") if len(checkpoints) > 1 \
            else None
    if head.get("unreadable"):
        return "the signed audit head file is unreadable"
    body = {k: v for k, v in head.items() if k != "sig"}
    if not verify(hub_public, canonical(body), head.get("sig", "")):
        return "the signed audit head file does not verify with the hub key (forged or altered)"
    k, upto = head.get("k", 0), head.get("upto", 0)
    if report.records < upto:
        return (f"the chain ends at record {report.records}, but the signed head seals record "
                f"{upto}: records {report.records + 1}..{upto} were cut off")
    if k not in checkpoints:
        return (f"the signed head is checkpoint {k}, which the store does not hold "
                f"({len(checkpoints)} checkpoints): checkpoints were removed")
    if checkpoints[k] != checkpoint_hash(head):
        return f"checkpoint {k} in the store differs from the signed head: it was rewritten"
    if len(checkpoints) - k > 1:
        return (f"the signed head is checkpoint {k} but the store holds {len(checkpoints)}: "
                "the head file was replaced with an older copy")
    return None


def describe_record(rec: dict[str, Any]) -> str:
    """One line for people: when, what, who, and the verdict with its rule."""
    when = (time.strftime("%H:%M:%S", time.localtime(rec["ts"]))
            + f".{int(rec['ts'] % 1 * 1000):03d}")
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
            f"({rec['code']}): {rec['reason']}" + (f" (rule: {rec['rule']})" if rec.get("rule")
                                                   else ""))
