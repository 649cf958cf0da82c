"""The kill switch: a suspended agent receives nothing — calls, events, memory watch pushes,
A2A and ACP traffic — its skill bodies never run, calls already waiting for it fail at once
with `suspended`, and `restore` lets it back with nothing lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from acp_sdk.client import Client as AcpClient
from acp_sdk.models import ACPError, MessagePart

from interlink import Agent, CallError, Event, EventContext, GateDenied, SkillContext, connect
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import audit_records, interlink_cli, make_home, wait_until


class Worker:
    """The agent to be suspended, counting what reaches its code."""

    def __init__(self, home: MeshHome, hub: RunningHub) -> None:
        self.ran: list[Any] = []
        self.events: list[Any] = []
        self.gate = asyncio.Event()
        self.agent = Agent("worker", credential=home.credential_path("worker"), hub=hub.url)

        @self.agent.skill("work")
        async def work(ctx: SkillContext, req: Any) -> str:
            self.ran.append(req)
            if isinstance(req, dict) and req.get("wait"):
                await self.gate.wait()
            return "done"

        @self.agent.on_event("jobs.*", durable="worker-jobs")
        async def job(ctx: EventContext, event: Event) -> None:
            self.events.append(event.data)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, RunningHub]]:
    home = make_home(tmp_path / "home", {"worker": [], "boss": ["worker.work"]})
    home.grant("worker", subscribe=["jobs.*"], memory={"notes": "read"})
    home.grant("boss", publish=["jobs.*"], memory={"notes": "read-write"})
    async with background_hub(home) as running:
        yield home, running


def boss(home: MeshHome, hub: RunningHub) -> Any:
    return connect("boss", credential=home.credential_path("boss"), hub=hub.url)


async def suspend(home: MeshHome, name: str = "worker") -> None:
    done = await asyncio.to_thread(interlink_cli(home), "agent", "suspend", name)
    assert done.returncode == 0, done.stderr


async def test_a_suspended_agent_is_cut_off_and_calls_to_it_are_refused(
        mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    worker = Worker(home, hub)
    async with worker.agent, boss(home, hub) as b:
        assert await b.call("worker", "work", 1) == "done"
        await suspend(home)
        await wait_until(lambda: worker.agent.connection.refusal is not None, timeout=2)
        assert worker.agent.connection.refusal.code == "suspended"
        started = time.monotonic()
        with pytest.raises(GateDenied) as refused:
            await b.call("worker", "work", 2)
        assert time.monotonic() - started < 1.0
        assert refused.value.code == "suspended" and "restore" in refused.value.reason
        assert worker.ran == [1]  # the skill body never saw the second call
    cut = [r for r in await audit_records(home) if r["event"] == "cut_off"]
    assert cut and cut[-1]["agent"] == "worker"


async def test_a_running_call_fails_at_once(mesh: tuple[MeshHome, RunningHub]) -> None:
    """A call delivered and running when its target is suspended: the caller hears
    `suspended` at once, not at its 30 s deadline; the late reply is refused."""
    home, hub = mesh
    worker = Worker(home, hub)
    async with worker.agent, boss(home, hub) as b:
        running = asyncio.ensure_future(b.call("worker", "work", {"wait": True}, timeout=30))
        await wait_until(lambda: {"wait": True} in worker.ran, timeout=5)
        await suspend(home)
        started = time.monotonic()
        with pytest.raises(CallError) as failed:
            await asyncio.wait_for(running, 3)
        assert failed.value.code == "suspended"
        assert time.monotonic() - started < 1.0
        worker.gate.set()


async def test_offline_queued_call_fails_when_its_target_is_suspended(
        mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    async with boss(home, hub) as b:
        queued = asyncio.ensure_future(b.call("worker", "work", "queued", timeout=30))
        await wait_until(lambda: hub.hub.calls.open_calls("boss") == 1)  # accepted, waiting
        assert not queued.done()
        started = time.monotonic()
        await suspend(home)
        with pytest.raises(CallError) as failed:
            await asyncio.wait_for(queued, 5)
        assert failed.value.code == "suspended"
        assert time.monotonic() - started < 2.0


async def test_events_wait_for_a_restored_agent_and_watches_push_nothing(
        mesh: tuple[MeshHome, RunningHub]) -> None:
    """Events published while it is suspended reach its durable handler only after restore
    (none lost); a memory watch it held pushes nothing while suspended."""
    home, hub = mesh
    worker = Worker(home, hub)
    async with boss(home, hub) as b:
        async with worker.agent:
            watcher = connect("worker", credential=home.credential_path("worker"), hub=hub.url)
            async with watcher:
                changes = await watcher.memory("notes").watch()
                await b.publish("jobs.one", {"n": 1})
                await wait_until(lambda: worker.events == [{"n": 1}], timeout=5)
                await suspend(home)
                await wait_until(lambda: worker.agent.connection.refusal is not None, 2)
                await b.publish("jobs.two", {"n": 2})
                await b.memory("notes").put("k", {"secret": True})
                with pytest.raises((asyncio.TimeoutError, StopAsyncIteration)):
                    await asyncio.wait_for(changes.__anext__(), 1.0)
                assert worker.events == [{"n": 1}]
        restored = await asyncio.to_thread(interlink_cli(home), "agent", "restore", "worker")
        assert restored.returncode == 0
        # `agent restore` returns once the running hub applied it: nothing to wait for
        again = Worker(home, hub)
        async with again.agent:
            await wait_until(lambda: {"n": 2} in again.events, timeout=10)
            assert await b.call("worker", "work", 3) == "done"
            assert again.ran == [3]


async def test_edges_cannot_reach_a_suspended_agent(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, hub = mesh
    worker = Worker(home, hub)
    async with worker.agent:
        await suspend(home)
        await wait_until(lambda: worker.agent.connection.refusal is not None, 2)
    token = issue_token(hub.hub.key, "boss")
    base = f"http://127.0.0.1:{hub.port}"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.post(f"{base}/a2a/worker", json={
            "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
            "params": {"message": {"messageId": uuid.uuid4().hex, "role": "ROLE_USER",
                                   "parts": [{"data": {"n": 1}}]},
                       "metadata": {"skill": "work"}}},
            headers={"A2A-Version": "1.0"})
        body = answer.json()
        assert "error" in body, body
        assert "suspended" in body["error"]["message"], body
    async with AcpClient(base_url=f"{base}/acp", timeout=30,
                         headers={"Authorization": f"Bearer {token}"}) as acp:
        with pytest.raises(ACPError) as refused:
            await acp.run_sync(MessagePart(content=json.dumps(1),
                                           content_type="application/json"),
                               agent="worker.work")
        assert "suspended" in str(refused.value)
    assert worker.ran == []
