"""An audit trail that cannot be cut silently, judged by `interlink audit verify` as an operator
runs it: cutting records off the end (with and without the last checkpoint), removing a
checkpoint, rewriting and re-hashing the tail, and cutting after a SIGKILL are each found (exit
non-zero, naming what is wrong); an unclean stop is recorded and shown; every policy change is
a record; and a second hub on the same home exits at once without touching the chain."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from interlink import GateDenied, connect
from interlink.home import MeshHome
from interlink.identity import canonical
from interlink.server import background_hub
from interlink.services.audit import record_hash

from ..helpers import (
    HubProcess,
    env_python,
    free_port,
    interlink_cli,
    make_home,
    sealed,
    wait_until,
)


def home_with_traffic_grants(root: Path) -> MeshHome:
    return make_home(root, {"alice": ["bob.*"], "bob": [], "mallory": []})


async def traffic(home: MeshHome, url: str, n: int = 5) -> None:
    """Some accepted and some refused envelopes (each an audit record)."""
    async with connect("mallory", credential=home.credential_path("mallory"), hub=url) as m:
        for _ in range(n):
            with pytest.raises(GateDenied):
                await m.call("bob", "anything", {})


async def clean_chain(home: MeshHome) -> None:
    hub = HubProcess(home)
    await hub.start()
    try:
        await traffic(home, hub.url)
    finally:
        hub.stop()


def rows(home: MeshHome) -> list[tuple[int, str, dict[str, Any]]]:
    with sqlite3.connect(home.db_path) as db:
        return [(seq, subject, json.loads(data)) for seq, subject, data in db.execute(
            "SELECT seq, subject, data FROM messages WHERE log='audit' ORDER BY seq")]


def delete_seqs(home: MeshHome, seqs: list[int]) -> None:
    with sqlite3.connect(home.db_path) as db:
        db.executemany("DELETE FROM messages WHERE log='audit' AND seq=?", [(s,) for s in seqs])


def verify(home: MeshHome) -> subprocess.CompletedProcess[str]:
    return interlink_cli(home)("audit", "verify")


def assert_broken(home: MeshHome, *words: str) -> str:
    result = verify(home)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert "audit chain broken" in text, text
    for word in words:
        assert word in text, (word, text)
    return text


async def test_an_untouched_chain_verifies_against_its_signed_head(tmp_path: Path) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    await clean_chain(home)
    result = verify(home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout and "signed head" in result.stdout
    assert "uncleanly" not in result.stdout


def cut_records_only(home: MeshHome) -> None:
    """The last three records, leaving every checkpoint."""
    delete_seqs(home, [s for s, subject, _ in rows(home) if subject == "audit.record"][-3:])


def cut_records_and_last_checkpoint(home: MeshHome) -> None:
    """Everything after the second-to-last checkpoint: records and the last checkpoint."""
    all_rows = rows(home)
    cps = [s for s, subject, _ in all_rows if subject == "audit.checkpoint"]
    delete_seqs(home, [s for s, _, _ in all_rows if s > cps[-2]])


def remove_a_middle_checkpoint(home: MeshHome) -> None:
    cps = [s for s, subject, _ in rows(home) if subject == "audit.checkpoint"]
    delete_seqs(home, [cps[len(cps) // 2]])


def rewrite_and_rehash_the_tail(home: MeshHome) -> None:
    """Change a record after the first checkpoint, re-hash every record after it, and drop
    the checkpoints that no longer match (the forger cannot sign new ones)."""
    all_rows = rows(home)
    first_cp = next(s for s, subject, _ in all_rows if subject == "audit.checkpoint")
    prev = None
    with sqlite3.connect(home.db_path) as db:
        for seq, subject, item in all_rows:
            if seq <= first_cp:
                if subject == "audit.record":
                    prev = item["hash"]
                continue
            if subject == "audit.checkpoint":
                db.execute("DELETE FROM messages WHERE log='audit' AND seq=?", (seq,))
                continue
            if item.get("event") == "gate":
                item["decision"] = "accepted"  # history rewritten: mallory was let in
            item["prev"] = prev
            item["hash"] = record_hash(item)
            prev = item["hash"]
            db.execute("UPDATE messages SET data=? WHERE log='audit' AND seq=?",
                       (canonical(item), seq))


def remove_the_head_file(home: MeshHome) -> None:
    home.audit_head_path.unlink()


TAMPERING: dict[str, tuple[Callable[[MeshHome], None], tuple[str, ...]]] = {
    "records cut off, checkpoints kept": (cut_records_only, ("record",)),
    "records and the last checkpoint cut off": (cut_records_and_last_checkpoint, ("cut off",)),
    "a checkpoint removed": (remove_a_middle_checkpoint, ("checkpoint",)),
    "tail rewritten and re-hashed": (rewrite_and_rehash_the_tail, ("checkpoint",)),
    "signed head file removed": (remove_the_head_file, ("head",)),
}


@pytest.mark.parametrize("how", list(TAMPERING))
async def test_tampering_is_found(tmp_path: Path, how: str) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    policy = home.load_policy()
    policy.hub.audit_seal_seconds = 0.05  # many checkpoints to cut between
    home.save_policy(policy)
    hub = HubProcess(home)
    await hub.start()
    try:
        for _ in range(4):
            await traffic(home, hub.url, 3)
            await sealed(home)  # a checkpoint after each round: several to cut between
    finally:
        hub.stop()
    assert verify(home).returncode == 0
    tamper, words = TAMPERING[how]
    tamper(home)
    assert_broken(home, *words)


async def test_sigkill_then_cut_is_found_and_the_next_hub_refuses_to_seal_it(
        tmp_path: Path) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    hub = HubProcess(home)
    await hub.start()
    await traffic(home, hub.url)
    await sealed(home)  # within hub.audit_seal_seconds (1 s)
    await traffic(home, hub.url)
    await sealed(home)
    hub.kill()
    assert verify(home).returncode == 0
    cut_records_and_last_checkpoint(home)
    text = assert_broken(home, "cut off")
    assert "records" in text
    # a new hub does not seal the shortened chain as if nothing happened
    second = HubProcess(home)
    with pytest.raises(RuntimeError, match="cut off"):
        await second.start(timeout=20)
    assert_broken(home, "cut off")
    # the operator may start anyway, and the gap stays in the chain for good
    proc = subprocess.Popen([sys.executable, "-m", "interlink", "serve", "--home",
                             str(home.root), "--port", str(free_port()), "--accept-audit-gap"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env_python())
    try:
        await wait_until(lambda: any(r["event"] == "audit_gap" for r in _records(home)),
                         timeout=20, interval=0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    assert_broken(home, "gap")


def _records(home: MeshHome) -> list[dict[str, Any]]:
    return [item for _, subject, item in rows(home) if subject == "audit.record"]


async def test_an_unclean_stop_is_recorded_and_shown(tmp_path: Path) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    hub = HubProcess(home)
    await hub.start()
    await traffic(home, hub.url)
    hub.kill()
    again = HubProcess(home)
    await again.start()
    again.stop()
    records = _records(home)
    [unclean] = [r for r in records if r["event"] == "unclean_stop"]
    after = records[records.index(unclean) + 1]
    assert after["event"] == "hub_started"
    result = verify(home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopped uncleanly" in result.stdout


async def test_a_start_without_a_stop_before_it_is_flagged(tmp_path: Path) -> None:
    """An attacker removes the `hub_stopped` record and everything after (renumbering is
    impossible without the hub key, so it re-hashes and drops checkpoints): the start that
    follows has no stop before it, and the head file names the lost checkpoints."""
    home = home_with_traffic_grants(tmp_path / "home")
    await clean_chain(home)
    await clean_chain(home)
    assert verify(home).returncode == 0
    all_rows = rows(home)
    [stop] = [s for s, subj, item in all_rows if item.get("event") == "hub_stopped"][:1]
    delete_seqs(home, [stop])
    assert_broken(home, "record")


async def test_policy_changes_are_in_the_chain(tmp_path: Path) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    async with background_hub(home) as hub:
        cli = interlink_cli(home)
        for args in (("agent", "grant", "alice", "--call", "bob.review"),
                     ("agent", "suspend", "mallory"), ("agent", "restore", "mallory")):
            done = await asyncio.to_thread(cli, *args)
            assert done.returncode == 0, done.stderr
            await wait_until(lambda: _policy_records(home) and _digest(home) ==
                             _policy_records(home)[-1]["digest"], timeout=3)
        await hub.hub.quarantine("bob", "test")
        await wait_until(lambda: any(r["event"] == "quarantined" for r in _records(home)), 3)
    policy = _policy_records(home)
    assert policy[0].get("initial") is True
    changes = [p["changes"] for p in policy[1:]]
    assert "bob.review" in json.dumps(changes[0]["agents"]["alice"]["calls"]["to"])
    assert changes[1]["agents"]["mallory"]["suspended"] == {"from": False, "to": True}
    assert changes[2]["agents"]["mallory"]["suspended"] == {"from": True, "to": False}
    assert changes[3]["agents"]["bob"]["suspended"] == {"from": False, "to": True}
    # a change made while no hub runs is recorded at the next start, as such
    done = interlink_cli(home)("agent", "restore", "bob")
    assert done.returncode == 0
    async with background_hub(home):
        pass
    last = _policy_records(home)[-1]
    assert last["while_stopped"] is True and last["digest"] == _digest(home)
    assert last["changes"]["agents"]["bob"]["suspended"] == {"from": True, "to": False}
    shown = interlink_cli(home)("audit", "show", "--last", "200")
    assert "quarantined" in shown.stdout and "policy" in shown.stdout


def _policy_records(home: MeshHome) -> list[dict[str, Any]]:
    return [r for r in _records(home) if r["event"] == "policy"]


def _digest(home: MeshHome) -> str:
    return hashlib.sha256(home.policy_path.read_bytes()).hexdigest()


async def test_audit_show_prints_each_rule(tmp_path: Path) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    await clean_chain(home)
    shown = interlink_cli(home)("audit", "show", "--last", "50")
    assert "rule: default deny: no entry in agents.mallory.calls matches bob.anything" in \
        shown.stdout, shown.stdout


async def test_a_second_hub_on_the_same_home_exits_and_changes_nothing(
        tmp_path: Path) -> None:
    home = home_with_traffic_grants(tmp_path / "home")
    first = HubProcess(home)
    await first.start()
    try:
        await traffic(home, first.url)
        before = _records(home)
        for port in (free_port(), first.port):  # another port, or the same (taken) one
            second = subprocess.run(
                [sys.executable, "-m", "interlink", "serve", "--home", str(home.root),
                 "--port", str(port)], capture_output=True, text=True, timeout=30,
                env=env_python())
            assert second.returncode != 0
            said = second.stdout + second.stderr
            assert "another hub is already running" in said, said
            assert f"pid {first.proc.pid}" in said, said  # type: ignore[union-attr]
            assert "Traceback" not in said
        assert _records(home) == before  # the second hub wrote nothing
        await traffic(home, first.url)  # the first still serves
    finally:
        first.stop()
    result = verify(home)
    assert result.returncode == 0, result.stdout + result.stderr
