"""A store file written by the previous schema (1: logs without `max_age`) is upgraded in
place when opened, keeping what it held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from interlink.store import open_store


async def test_a_schema_1_file_is_upgraded_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with open_store(f"sqlite:///{path}") as store:
        log = await store.log("events")
        await log.append("t.a", b"kept", msg_id="m-1")
    db = sqlite3.connect(path, isolation_level=None)  # make it what schema 1 wrote
    db.executescript("BEGIN; CREATE TABLE logs_v1 (name TEXT PRIMARY KEY, dedup_window REAL "
                     "NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID; "
                     "INSERT INTO logs_v1 SELECT name, dedup_window, last_seq FROM logs; "
                     "DROP TABLE logs; ALTER TABLE logs_v1 RENAME TO logs; "
                     "PRAGMA user_version = 1; COMMIT;")
    db.close()
    async with open_store(f"sqlite:///{path}") as store:
        log = await store.log("events", max_age=3600.0)
        assert [m.data for m in await log.read()] == [b"kept"]
        assert (await log.append("t.a", b"again", msg_id="m-1")).duplicate
        assert (await log.append("t.a", b"next")).seq == 2
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "max_age" in {row[1] for row in db.execute("PRAGMA table_info(logs)")}
