"""Shared memory through a real hub: revisions, CAS, based_on, history, TTL, watch, grants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, GateDenied, Mesh, SkillContext, StaleRevision, connect
from interlink.home import MeshHome
from interlink.server import RunningHub, background_hub

from ..helpers import applied, audit_records, make_home, wait_until

MEMORY = {
    "editor": {"blog": "read-write", "team-*": "read-write"},
    "drafter": {"blog": "read"},
    "archivist": {"blog": "read-write"},
    "outsider": {},
    **{f"counter{i}": {"counts": "read-write"} for i in range(8)},
}


@pytest.fixture
def mem_home(tmp_path: Path) -> MeshHome:
    home = make_home(tmp_path / "home", {name: [] for name in MEMORY})
    for name, grants in MEMORY.items():
        if grants:
            home.grant(name, memory=grants)
    return home


@pytest.fixture
async def hub(mem_home: MeshHome) -> AsyncIterator[RunningHub]:
    async with background_hub(mem_home) as running:
        yield running


def client(home: MeshHome, hub: RunningHub, name: str) -> Mesh:
    return connect(name, credential=home.credential_path(name), hub=hub.url)


async def test_put_get_update_delete_history(mem_home: MeshHome, hub: RunningHub) -> None:
    async with client(mem_home, hub, "editor") as editor:
        blog = editor.memory("blog")
        assert await blog.get("style-guide") is None
        r1 = await blog.put("style-guide", {"tone": "plain"})
        entry = await blog.get("style-guide")
        assert entry is not None
        assert (entry.value, entry.revision, entry.by) == ({"tone": "plain"}, r1, "editor")
        r2 = await blog.update("style-guide", {"tone": "warm"}, expect=r1)
        assert r2 > r1
        with pytest.raises(StaleRevision) as stale:
            await blog.update("style-guide", {"tone": "cold"}, expect=r1)
        assert stale.value.current == r2 and str(r2) in stale.value.reason
        r3 = await blog.delete("style-guide", expect=r2)
        assert await blog.get("style-guide") is None
        history = await blog.history("style-guide")
        assert [(h.revision, h.change, h.value) for h in history] == [
            (r1, "put", {"tone": "plain"}), (r2, "put", {"tone": "warm"}), (r3, "del", None)]
        created = await blog.update("fresh", [1, 2], expect=0)  # expect=0: only if absent
        with pytest.raises(StaleRevision) as exists:
            await blog.update("fresh", [3], expect=0)
        assert exists.value.current == created


async def test_list_by_prefix_and_namespaces_are_separate(mem_home: MeshHome,
                                                         hub: RunningHub) -> None:
    async with client(mem_home, hub, "editor") as editor:
        blog, team = editor.memory("blog"), editor.memory("team-a")
        for key in ("drafts/a", "drafts/b", "notes"):
            await blog.put(key, key)
        await team.put("drafts/z", "other namespace")
        assert [e.key for e in await blog.list("drafts/")] == ["drafts/a", "drafts/b"]
        assert [e.key for e in await blog.list()] == ["drafts/a", "drafts/b", "notes"]
        assert [e.key for e in await team.list()] == ["drafts/z"]


async def test_based_on_refuses_a_write_from_a_stale_picture(mem_home: MeshHome,
                                                            hub: RunningHub) -> None:
    async with client(mem_home, hub, "editor") as a, client(mem_home, hub, "archivist") as b:
        blog_a, blog_b = a.memory("blog"), b.memory("blog")
        guide = await blog_a.put("guide", "v1")
        outline = await blog_a.put("outline", ["intro"])
        seen = {"guide": guide, "outline": outline, "absent": 0}
        ok = await blog_a.put("draft", "from v1", based_on=seen)
        moved = await blog_b.put("guide", "v2")  # the picture changes
        with pytest.raises(StaleRevision) as stale:
            await blog_a.put("draft", "still from v1", based_on=seen)
        assert stale.value.code == "stale_context"
        assert stale.value.moved == {"guide": moved}
        assert "guide is at revision" in stale.value.reason
        draft = await blog_a.get("draft")
        assert draft is not None and (draft.value, draft.revision) == ("from v1", ok)


async def test_ttl_expires_entries(mem_home: MeshHome, hub: RunningHub) -> None:
    async with client(mem_home, hub, "editor") as editor:
        blog = editor.memory("blog")
        await blog.put("lease", "mine", ttl=0.3)
        entry = await blog.get("lease")
        assert entry is not None and entry.expires is not None

        async def expired() -> bool:
            return await blog.get("lease") is None
        await wait_until(expired, timeout=5)
        assert time.time() >= entry.expires - 0.01  # not gone before its time


async def test_entries_keep_writer_time_and_labels(mem_home: MeshHome, hub: RunningHub) -> None:
    async with client(mem_home, hub, "editor") as editor:
        conn = editor.connection
        fields = conn._control("memory", "blog", {"op": "put", "key": "k", "value": 1})
        fields["labels"] = {"level": "internal", "provenance": ["user"]}
        await conn.request(fields, durable=False)
        entry = await editor.memory("blog").get("k")
        assert entry is not None
        assert entry.labels == {"level": "internal", "tags": [], "integrity": "trusted",
                                "provenance": ["agent:editor", "user"]}
        assert entry.by == "editor" and entry.ts > 0


async def test_concurrent_read_modify_write_loses_no_update(mem_home: MeshHome,
                                                            hub: RunningHub) -> None:
    writers, increments = 8, 20
    conflicts = 0

    async def worker(name: str) -> None:
        nonlocal conflicts
        async with client(mem_home, hub, name) as mesh:
            counts = mesh.memory("counts")
            for _ in range(increments):
                while True:
                    current = await counts.get("n")
                    value, revision = (current.value, current.revision) if current else (0, 0)
                    try:
                        await counts.update("n", value + 1, expect=revision)
                        break
                    except StaleRevision:
                        conflicts += 1

    await asyncio.gather(*(worker(f"counter{i}") for i in range(writers)))
    async with client(mem_home, hub, "counter0") as mesh:
        final = await mesh.memory("counts").get("n")
    assert final is not None and final.value == writers * increments
    assert conflicts > 0, "the writers never collided: the test did not test CAS"


async def test_watch_pushes_changes_in_order(mem_home: MeshHome, hub: RunningHub) -> None:
    async with client(mem_home, hub, "editor") as editor, \
            client(mem_home, hub, "drafter") as drafter:
        changes = await drafter.memory("blog").watch("style")
        blog = editor.memory("blog")
        r1 = await blog.put("style-guide", {"v": 1})
        await blog.put("unrelated", 0)
        r2 = await blog.put("style-guide", {"v": 2})
        r3 = await blog.delete("style-guide")
        got = [await changes.get(5) for _ in range(3)]
        assert [(c.revision, c.change, c.value) for c in got] == [
            (r1, "put", {"v": 1}), (r2, "put", {"v": 2}), (r3, "del", None)]
        assert got[0].by == "editor"
        with pytest.raises(asyncio.TimeoutError):
            await changes.get(0.3)
        await changes.close()


async def test_watch_resumes_after_reconnect_missing_nothing(mem_home: MeshHome,
                                                            hub: RunningHub) -> None:
    """Changes made while the watcher's connection is down arrive after it reconnects: none
    missed, none twice, in revision order."""
    async with client(mem_home, hub, "editor") as editor, \
            client(mem_home, hub, "drafter") as drafter:
        changes = await drafter.memory("blog").watch("")
        blog = editor.memory("blog")
        written = [await blog.put(f"k{i}", i) for i in range(3)]
        seen = [(await changes.get(5)).revision for _ in range(3)]
        ws = drafter.connection._ws
        assert ws is not None
        await ws.aclose()  # drop the watcher's connection
        written += [await blog.put(f"k{i}", i) for i in range(3, 8)]
        for _ in range(5):
            seen.append((await changes.get(10)).revision)
        assert drafter.connection.reconnects >= 1
        written.append(await blog.put("k8", 8))
        seen.append((await changes.get(5)).revision)
        assert seen == written
        with pytest.raises(asyncio.TimeoutError):
            await changes.get(0.3)


async def test_hub_restart_loses_no_acknowledged_write(tmp_path: Path,
                                                       mem_home: MeshHome) -> None:
    from ..helpers import HubProcess
    proc = HubProcess(mem_home)
    await proc.start()
    try:
        async with connect("editor", credential=mem_home.credential_path("editor"),
                           hub=proc.url) as editor:
            blog = editor.memory("blog")
            acknowledged = {f"k{i}": await blog.put(f"k{i}", {"n": i}) for i in range(50)}
            proc.kill()
            await proc.start()
            for _ in range(100):  # wait for the reconnect
                if editor.connection.is_open:
                    break
                await asyncio.sleep(0.05)
            entries = {e.key: (e.revision, e.value["n"]) for e in await blog.list("k")}
        assert {k: r for k, (r, _) in entries.items()} == acknowledged
        assert all(int(k[1:]) == n for k, (_, n) in entries.items())
    finally:
        proc.stop()


async def test_skill_context_memory(mem_home: MeshHome, hub: RunningHub) -> None:
    mem_home.grant("editor", calls=["drafter.draft"])
    drafter = Agent("drafter", credential=mem_home.credential_path("drafter"), hub=hub.url)

    @drafter.skill("draft")
    async def draft(ctx: SkillContext, req: Any) -> Any:
        guide = await ctx.memory("blog").get("style-guide")
        return {"tone": guide.value["tone"] if guide else None}

    async with drafter, client(mem_home, hub, "editor") as editor:
        await editor.memory("blog").put("style-guide", {"tone": "plain"})
        await applied(hub)  # the grant above is picked up by the running hub
        assert await editor.call("drafter", "draft", {}) == {"tone": "plain"}


# -- grants and bad input -------------------------------------------------------------------

async def test_ungranted_reads_and_writes_are_refused_with_the_rule(mem_home: MeshHome,
                                                                   hub: RunningHub) -> None:
    async with client(mem_home, hub, "drafter") as drafter, \
            client(mem_home, hub, "outsider") as outsider:
        assert await drafter.memory("blog").get("x") is None  # read granted
        with pytest.raises(GateDenied) as write:
            await drafter.memory("blog").put("x", 1)
        assert (write.value.stage, write.value.code) == ("authorize", "not_granted")
        assert "read only" in (write.value.rule or "")
        with pytest.raises(GateDenied) as read:
            await outsider.memory("blog").get("x")
        assert read.value.code == "not_granted" and "default deny" in (read.value.rule or "")
        with pytest.raises(GateDenied) as watch:
            await outsider.memory("blog").watch()
        assert watch.value.code == "not_granted"
    records = await audit_records(mem_home)
    assert sum(1 for r in records if r.get("code") == "not_granted") == 3


@pytest.mark.parametrize(("namespace", "op", "fields", "code", "phrase"), [
    ("Blog!", "get", {"key": "k"}, "bad_namespace", "namespace"),
    ("blog", "get", {"key": "bad key"}, "bad_key", "memory key"),
    ("blog", "get", {"key": "/abs"}, "bad_key", "empty path segment"),
    ("blog", "get", {}, "bad_request", "needs a `key`"),
    ("blog", "put", {"key": "k"}, "bad_request", "needs a `value`"),
    ("blog", "update", {"key": "k", "value": 1}, "bad_request", "needs `expect`"),
    ("blog", "update", {"key": "k", "value": 1, "expect": "3"}, "bad_request", "expect"),
    ("blog", "put", {"key": "k", "value": 1, "ttl": -1}, "bad_request", "ttl"),
    ("blog", "put", {"key": "k", "value": 1, "based_on": {"k": "x"}}, "bad_request",
     "based_on"),
    ("blog", "put", {"key": "k", "value": 1, "colour": "red"}, "bad_request", "takes"),
    ("blog", "explode", {}, "bad_request", "not one of"),
    ("blog", "list", {"prefix": "bad prefix"}, "bad_key", "prefix"),
    ("blog", "watch", {"after_revision": -2}, "bad_request", "after_revision"),
    ("blog", "unwatch", {"watch": "nope"}, "unknown_watch", "no watch"),
])
async def test_bad_memory_operations_are_refused(mem_home: MeshHome, hub: RunningHub,
                                                 namespace: str, op: str,
                                                 fields: dict[str, Any], code: str,
                                                 phrase: str) -> None:
    async with client(mem_home, hub, "editor") as editor:
        with pytest.raises(GateDenied) as bad:
            await editor.connection.memory_request(namespace, op, fields)
        assert bad.value.code == code and phrase in bad.value.reason, bad.value
        assert await editor.memory("blog").put("still", "serving") > 0


async def test_oversized_and_non_json_values(mem_home: MeshHome, hub: RunningHub) -> None:
    limit = hub.hub.settings.max_memory_value_bytes
    async with client(mem_home, hub, "editor") as editor:
        blog = editor.memory("blog")
        with pytest.raises(GateDenied) as big:
            await blog.put("big", "x" * (limit + 1))
        assert (big.value.stage, big.value.code) == ("validate", "too_large")
        assert str(limit) in big.value.reason
        with pytest.raises(ValueError, match="JSON"):
            await blog.put("set", {1, 2})
        with pytest.raises(ValueError, match="JSON"):  # refused before it is signed
            raw = editor.connection._control("memory", "blog", {"op": "put", "key": "nan",
                                                                "value": float("nan")})
            await editor.connection.request(raw, durable=False)
        assert await blog.get("big") is None and await blog.get("nan") is None
