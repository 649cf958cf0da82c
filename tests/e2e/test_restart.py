"""Durability against a real hub process that is killed with SIGKILL and started again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, SkillContext, connect
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import GRACEFUL_STOP_SECONDS

from ..helpers import HubProcess, audit_records, make_home, wait_until


@pytest.fixture
async def proc_home(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, HubProcess]]:
    home = make_home(tmp_path / "home", {"caller": ["worker.*"], "worker": []})
    hub = HubProcess(home)
    await hub.start()
    try:
        yield home, hub
    finally:
        hub.stop()


def worker(home: MeshHome, url: str, runs: list[str], delay: float = 0.0) -> Agent:
    agent = Agent("worker", credential=home.credential_path("worker"), hub=url)

    @agent.skill("echo")
    async def echo(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        runs.append(req["n"])
        if delay:
            await asyncio.sleep(delay)
        return {"n": req["n"]}

    return agent


async def test_accepted_calls_survive_a_hub_kill(proc_home: tuple[MeshHome, HubProcess]) -> None:
    """Calls accepted for an offline agent survive SIGKILL of the hub; after the restart the
    agent receives each once and every caller gets its result."""
    home, hub = proc_home
    runs: list[str] = []
    async with connect("caller", credential=home.credential_path("caller"),
                       hub=hub.url) as mesh:
        calls = [asyncio.ensure_future(mesh.call("worker", "echo", {"n": f"c{i}"}, timeout=60,
                                                 call_id=f"durable-{i}")) for i in range(5)]

        async def all_accepted() -> bool:
            records = await audit_records(home)
            return sum(1 for r in records if r.get("decision") == "accepted"
                       and r["envelope"]["kind"] == "call") == 5
        await wait_until(all_accepted, timeout=10)
        hub.kill()
        await asyncio.sleep(0.3)
        assert not any(c.done() for c in calls)
        await hub.start()
        async with worker(home, hub.url, runs):
            results = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert sorted(r["n"] for r in results) == [f"c{i}" for i in range(5)]
    assert sorted(runs) == [f"c{i}" for i in range(5)]  # each ran exactly once


async def test_call_in_flight_when_hub_dies_completes_once(
        proc_home: tuple[MeshHome, HubProcess]) -> None:
    """A call being worked on when the hub is killed completes after the restart, and the
    skill is not run a second time."""
    home, hub = proc_home
    runs: list[str] = []
    async with worker(home, hub.url, runs, delay=1.0), \
            connect("caller", credential=home.credential_path("caller"), hub=hub.url) as mesh:
        pending = asyncio.ensure_future(mesh.call("worker", "echo", {"n": "inflight"},
                                                  timeout=60))
        await wait_until(lambda: runs == ["inflight"], timeout=10)
        hub.kill()
        await hub.start()
        result = await asyncio.wait_for(pending, 30)
    assert result == {"n": "inflight"}
    assert runs == ["inflight"]


async def test_audit_chain_continues_across_restart(
        proc_home: tuple[MeshHome, HubProcess]) -> None:
    """After a kill and restart the audit chain continues and still verifies."""
    from interlink.services.audit import verify_chain
    from interlink.store import open_store

    home, hub = proc_home
    async with connect("caller", credential=home.credential_path("caller"), hub=hub.url):
        pass
    hub.kill()
    await hub.start()
    async with connect("caller", credential=home.credential_path("caller"), hub=hub.url):
        pass
    hub.stop()
    async with open_store(f"sqlite:///{home.db_path}") as store:
        report = await verify_chain(await store.log("audit"), home.hub_key().public)
    assert report.ok, report.problems
    assert report.records >= 4


async def test_a_stopping_hub_does_not_wait_for_ever_on_a_request_in_flight(
        tmp_path: Path) -> None:
    """An A2A request whose skill runs for minutes is open when the hub is asked to stop: the
    hub stops within its graceful window (uvicorn alone would wait for the request to end)."""
    home = make_home(tmp_path / "home", {"alice": ["slow.*"], "slow": []})
    hub = HubProcess(home)
    await hub.start()
    slow = Agent("slow", credential=home.credential_path("slow"), hub=hub.url)
    started = asyncio.Event()

    @slow.skill("work")
    async def work(ctx: SkillContext, req: Any) -> Any:
        started.set()
        await asyncio.sleep(300)
        return "too late"

    try:
        async with slow, httpx.AsyncClient(timeout=600) as http:
            request = asyncio.ensure_future(http.post(
                f"http://127.0.0.1:{hub.port}/a2a/slow",
                headers={"Authorization": f"Bearer {issue_token(home.hub_key(), 'alice')}",
                         "A2A-Version": "1.0"},
                json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                    "message": {"messageId": "m1", "role": "ROLE_USER",
                                "parts": [{"data": {}}]}}}))
            await asyncio.wait_for(started.wait(), 20)
            assert hub.proc is not None
            asked = time.monotonic()
            hub.proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(hub.proc.wait, GRACEFUL_STOP_SECONDS + 20)
            assert time.monotonic() - asked < GRACEFUL_STOP_SECONDS + 10
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
    finally:
        hub.stop()
