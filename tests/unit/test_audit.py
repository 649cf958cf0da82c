"""The audit chain finds any record changed, removed or reordered, and forged checkpoints."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from interlink.identity import HubKey
from interlink.services.audit import AuditLog, verify_chain
from interlink.store import open_store


async def write_chain(path: Path, hub: HubKey, n: int, every: int = 4) -> None:
    async with open_store(f"sqlite:///{path}") as store:
        audit = AuditLog(await store.log("audit"), hub, checkpoint_every=every)
        await audit.open()
        for i in range(n):
            await audit.append("test", i=i)
        await audit.checkpoint()


async def verify(path: Path, hub: HubKey) -> list[str]:
    async with open_store(f"sqlite:///{path}") as store:
        return (await verify_chain(await store.log("audit"), hub.public)).problems


def rows(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def record_rows(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
    return db.execute("SELECT seq, data FROM messages WHERE log='audit' AND "
                      "subject='audit.record' ORDER BY seq").fetchall()


async def test_intact_chain_verifies(tmp_path: Path) -> None:
    """An untouched chain verifies, with its checkpoints."""
    hub = HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, 10)
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        report = await verify_chain(await store.log("audit"), hub.public)
    assert report.ok and report.records == 10 and report.checkpoints >= 3
    assert report.sealed_upto == 10


async def test_chain_continues_after_reopen(tmp_path: Path) -> None:
    """A second writer session continues the chain rather than starting a new one."""
    hub = HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, 5)
    await write_chain(tmp_path / "a.db", hub, 5)
    assert await verify(tmp_path / "a.db", hub) == []


async def test_changed_record_is_named(tmp_path: Path) -> None:
    """Changing a field of record 4 makes verify name record 4."""
    hub = HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, 8)
    with rows(tmp_path / "a.db") as db:
        seq, data = record_rows(db)[3]
        rec = json.loads(data)
        assert rec["n"] == 4
        rec["i"] = 999
        db.execute("UPDATE messages SET data=? WHERE log='audit' AND seq=?",
                   (json.dumps(rec).encode(), seq))
    problems = await verify(tmp_path / "a.db", hub)
    assert problems and "record 4 was changed" in problems[0]


async def test_removed_record_is_named(tmp_path: Path) -> None:
    """Deleting record 3 makes verify say record 3 is missing."""
    hub = HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, 8)
    with rows(tmp_path / "a.db") as db:
        seq, _ = record_rows(db)[2]
        db.execute("DELETE FROM messages WHERE log='audit' AND seq=?", (seq,))
    problems = await verify(tmp_path / "a.db", hub)
    assert problems and "record 3 is missing" in problems[0]


async def test_reordered_records_are_found(tmp_path: Path) -> None:
    """Swapping records 5 and 6 is found."""
    hub = HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, 8)
    with rows(tmp_path / "a.db") as db:
        (s5, d5), (s6, d6) = record_rows(db)[4:6]
        db.execute("UPDATE messages SET data=? WHERE log='audit' AND seq=?", (d6, s5))
        db.execute("UPDATE messages SET data=? WHERE log='audit' AND seq=?", (d5, s6))
    problems = await verify(tmp_path / "a.db", hub)
    assert problems and "record 5" in problems[0]


async def test_rewritten_chain_fails_the_signed_checkpoint(tmp_path: Path) -> None:
    """Re-hashing the whole chain after an edit still fails: checkpoints are signed by the
    hub key, which the forger does not have."""
    hub, forger = HubKey.generate(), HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, 6, every=100)
    # the forger rebuilds an entirely new chain with the same shape, signed with its own key
    with rows(tmp_path / "a.db") as db:
        db.execute("DELETE FROM messages WHERE log='audit'")
    await write_chain(tmp_path / "a.db", forger, 6, every=100)
    problems = await verify(tmp_path / "a.db", hub)
    assert problems and "signature does not verify" in problems[0]


@pytest.mark.parametrize("n", [0, 1])
async def test_tiny_chains(tmp_path: Path, n: int) -> None:
    """Empty and one-record chains verify."""
    hub = HubKey.generate()
    await write_chain(tmp_path / "a.db", hub, n)
    assert await verify(tmp_path / "a.db", hub) == []


async def write_headed(path: Path, head: Path, hub: HubKey, n: int, *, stop: bool = True,
                       every: int = 4) -> None:
    async with open_store(f"sqlite:///{path}") as store:
        audit = AuditLog(await store.log("audit"), hub, checkpoint_every=every, head_path=head)
        await audit.open()
        for i in range(n):
            await audit.append("test", i=i)
        if stop:
            await audit.append("hub_stopped")
            await audit.checkpoint()


async def test_opening_a_store_behind_its_signed_head_refuses(tmp_path: Path) -> None:
    """Records cut off the store's end: the next writer will not seal the shortened chain,
    unless told to, and then the gap stays in the chain."""
    from interlink.services.audit import AuditCut
    hub, head = HubKey.generate(), tmp_path / "audit.head"
    await write_headed(tmp_path / "a.db", head, hub, 10)
    with rows(tmp_path / "a.db") as db:
        for seq, _ in record_rows(db)[-3:]:
            db.execute("DELETE FROM messages WHERE log='audit' AND seq=?", (seq,))
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        audit = AuditLog(await store.log("audit"), hub, checkpoint_every=4, head_path=head)
        with pytest.raises(AuditCut, match="cut off"):
            await audit.open()
        await audit.open(accept_gap=True)
        await audit.checkpoint()
        report = await verify_chain(await store.log("audit"), hub.public, head_path=head)
        gaps = [json.loads(m.data) for m in await (await store.log("audit")).read(
            1, subject="audit.record", limit=100) if b"audit_gap" in m.data]
    assert report.problems  # still broken: the cut is never sealed over
    assert len(gaps) == 1 and "cut off" in gaps[0]["problem"]


@pytest.mark.parametrize("checkpoints", [1, 2])
async def test_a_hub_killed_before_its_first_head_was_written_starts_again(
        tmp_path: Path, checkpoints: int) -> None:
    """A checkpoint commits, then its head is written: a hub killed in between leaves the head
    one behind — for the very first checkpoint, no head at all. That one step is a crash, not
    tampering; a missing head behind two checkpoints is still refused."""
    from interlink.services.audit import AuditCut
    hub, head = HubKey.generate(), tmp_path / "audit.head"
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        audit = AuditLog(await store.log("audit"), hub, checkpoint_every=100, head_path=head)
        await audit.open()
        for i in range(checkpoints):
            await audit.append("test", i=i)
            await audit.checkpoint()
    head.unlink()  # the kill: the last checkpoint is in the store, its head never written
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        report = await verify_chain(await store.log("audit"), hub.public, head_path=head)
        reopened = AuditLog(await store.log("audit"), hub, checkpoint_every=100, head_path=head)
        if checkpoints == 1:
            assert report.ok, report.problems
            await reopened.open()
        else:
            assert report.problems and "missing" in report.problems[0]
            with pytest.raises(AuditCut, match="missing"):
                await reopened.open()


async def test_checkpoints_are_numbered_and_chained(tmp_path: Path) -> None:
    hub, head = HubKey.generate(), tmp_path / "audit.head"
    await write_headed(tmp_path / "a.db", head, hub, 12)
    with rows(tmp_path / "a.db") as db:
        cps = db.execute("SELECT seq FROM messages WHERE log='audit' AND "
                         "subject='audit.checkpoint' ORDER BY seq").fetchall()
        assert len(cps) >= 3
        db.execute("DELETE FROM messages WHERE log='audit' AND seq=?", cps[1])
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        report = await verify_chain(await store.log("audit"), hub.public, head_path=head)
    assert report.problems and "checkpoints were removed" in report.problems[0]


async def test_reopening_without_a_stop_records_an_unclean_stop(tmp_path: Path) -> None:
    hub, head = HubKey.generate(), tmp_path / "audit.head"
    await write_headed(tmp_path / "a.db", head, hub, 6, stop=False, every=100)
    await write_headed(tmp_path / "a.db", head, hub, 1)
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        report = await verify_chain(await store.log("audit"), hub.public, head_path=head)
    assert report.ok, report.problems
    assert len(report.notices) == 1 and "uncleanly" in report.notices[0]
    assert "6 of its records were not yet sealed" in report.notices[0]
