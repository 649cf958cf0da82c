"""Mesh agents served over ACP at `/acp`, exercised with the official acp-sdk client against a
real hub: the gate decides every run exactly as for SDK agents."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from acp_sdk.client import Client
from acp_sdk.models import ACPError, Message, MessageAwaitResume, MessagePart, RunStatus

from interlink import Agent, InputRequired, SkillContext
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import audit_records, make_home, wait_until

Mesh = tuple[MeshHome, RunningHub, asyncio.Event]


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    home = make_home(tmp_path / "home", {"alice": ["worker.*", "solo.*"], "bob": ["worker.*"],
                                         "mallory": [], "worker": [], "solo": []})
    async with background_hub(home) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)
        solo = Agent("solo", credential=home.credential_path("solo"), hub=running.url)
        release = asyncio.Event()

        @worker.skill("echo", input_schema={"type": "object"})
        async def echo(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
            await ctx.progress("thinking")
            return {"echo": req, "caller": ctx.caller, "task": ctx.message.get("taskId")}

        @worker.skill("chunks")
        async def chunks(ctx: SkillContext, req: Any) -> str:
            for i in range(3):
                await ctx.artifact(text=f"part {i}", name="story", append=i > 0,
                                   last_chunk=i == 2)
            return "done"

        @worker.skill("ask")
        async def ask(ctx: SkillContext, req: Any) -> dict[str, Any]:
            if req == "start":
                raise InputRequired("which colour?")
            return {"colour": req, "task": ctx.message.get("taskId")}

        @worker.skill("slow")
        async def slow(ctx: SkillContext, req: Any) -> str:
            await release.wait()
            return "finally"

        @worker.skill("broken")
        async def broken(ctx: SkillContext, req: Any) -> None:
            raise RuntimeError("the worker broke")

        @solo.skill("greet")
        async def greet(ctx: SkillContext, req: str) -> str:
            return f"hello {req}"

        async with worker, solo:
            yield home, running, release
            release.set()


def base(running: RunningHub) -> str:
    return f"http://127.0.0.1:{running.port}/acp"


def client_for(running: RunningHub, agent: str | None) -> Client:
    headers = {"Authorization": f"Bearer {issue_token(running.hub.key, agent)}"} if agent else {}
    return Client(base_url=base(running), headers=headers, timeout=30)


def json_part(value: Any) -> MessagePart:
    return MessagePart(content=json.dumps(value), content_type="application/json")


async def test_agents_are_listed_as_manifests(mesh: Mesh) -> None:
    _, running, _ = mesh
    async with client_for(running, None) as client:  # discovery is public, like A2A cards
        await client.ping()
        agents = {a.name: a async for a in client.agents()}
        assert {"worker", "solo", "alice"} <= set(agents)
        worker = await client.agent(name="worker")
        skills = {s["id"]: s for s in worker.metadata.model_extra["skills"]}
        assert {"echo", "chunks", "ask", "slow"} <= set(skills)
        assert skills["echo"]["input_schema"] == {"type": "object"}
        assert "echo" in {c.name for c in worker.metadata.capabilities or []}
        with pytest.raises(ACPError) as missing:
            await client.agent(name="nobody")
        assert missing.value.error.code == "not_found"


async def test_run_sync_through_the_gate_is_audited(mesh: Mesh) -> None:
    home, running, _ = mesh
    async with client_for(running, "alice") as client:
        run = await client.run_sync(json_part({"n": 1}), agent="worker.echo")
        assert run.status == RunStatus.COMPLETED and run.agent_name == "worker.echo"
        [message] = run.output
        assert message.role == "agent/worker"
        reply = json.loads(message.parts[-1].content or "")
        assert reply["echo"] == {"n": 1}
        assert reply["caller"] == "alice"  # the token's identity
        assert reply["task"] == str(run.run_id)
        greeting = await client.run_sync("ada", agent="solo")  # its only skill; text in, out
        assert str(greeting.output[0]) == "hello ada"
        assert (await client.run_status(run_id=run.run_id)).status == RunStatus.COMPLETED
        events = [e.type async for e in client.run_events(run_id=run.run_id)]
        assert events[0] == "run.created" and events[-1] == "run.completed"
        async with client.session() as session:  # one session: one mesh conversation
            first = await session.run_sync(json_part({}), agent="worker.echo")
            second = await session.run_sync(json_part({}), agent="worker.echo")
            assert first.session_id == second.session_id != run.session_id
    records = await audit_records(home)
    assert any(r.get("envelope", {}).get("sender") == "alice"
               and r["envelope"].get("target") == "worker.echo" for r in records)


async def test_run_names_an_agent_and_a_skill(mesh: Mesh) -> None:
    _, running, _ = mesh
    async with client_for(running, "alice") as client:
        with pytest.raises(ACPError, match=r"worker\.SKILL") as vague:
            await client.run_sync("x", agent="worker")  # several skills: which one?
        assert vague.value.error.code == "invalid_input"
        with pytest.raises(ACPError) as ghost:
            await client.run_sync("x", agent="ghost")
        assert ghost.value.error.code == "not_found"


async def test_run_async_then_poll(mesh: Mesh) -> None:
    _, running, release = mesh
    async with client_for(running, "alice") as client:
        run = await client.run_async("go", agent="worker.slow")
        assert run.status == RunStatus.IN_PROGRESS and not run.output
        assert (await client.run_status(run_id=run.run_id)).status == RunStatus.IN_PROGRESS
        release.set()

        async def completed() -> bool:
            status = await client.run_status(run_id=run.run_id)
            return status.status == RunStatus.COMPLETED

        await wait_until(completed, timeout=10)
        done = await client.run_status(run_id=run.run_id)
        assert str(done.output[0]) == "finally" and done.finished_at is not None


async def test_run_stream_events_in_order(mesh: Mesh) -> None:
    _, running, _ = mesh
    async with client_for(running, "alice") as client:
        events = [e async for e in client.run_stream("go", agent="worker.chunks")]
        assert [e.type for e in events] == [
            "run.created", "run.in-progress", "message.created", "message.part",
            "message.part", "message.part", "message.part", "message.completed",
            "run.completed"]
        parts = [e.part for e in events if e.type == "message.part"]
        assert [(p.name, p.content) for p in parts] == [
            ("story", "part 0"), ("story", "part 1"), ("story", "part 2"), (None, "done")]
        assert events[-1].run.status == RunStatus.COMPLETED
        assert len(events[-1].run.output[0].parts) == 4
        noted = [e async for e in client.run_stream(json_part({}), agent="worker.echo")]
        assert any(e.type == "generic" and e.generic.model_extra == {"note": "thinking"}
                   for e in noted)


async def test_failing_skill_is_a_failed_run(mesh: Mesh) -> None:
    _, running, _ = mesh
    async with client_for(running, "alice") as client:
        run = await client.run_sync("x", agent="worker.broken")
        assert run.status == RunStatus.FAILED and run.error is not None
        assert run.error.code == "skill_error" and "the worker broke" in run.error.message
        with pytest.raises(ACPError, match="the worker broke"):
            run.raise_for_status()
        streamed = [e.type async for e in client.run_stream("x", agent="worker.broken")]
        assert streamed[-1] == "run.failed"


async def test_input_required_awaits_and_resumes(mesh: Mesh) -> None:
    _, running, _ = mesh
    async with client_for(running, "alice") as client:
        run = await client.run_sync("start", agent="worker.ask")
        assert run.status == RunStatus.AWAITING
        assert run.await_request is not None and str(run.await_request.message) == "which colour?"
        resumed = await client.run_resume_sync(
            MessageAwaitResume(message=Message(parts=[MessagePart(content="blue")])),
            run_id=run.run_id)
        assert resumed.status == RunStatus.COMPLETED and resumed.await_request is None
        assert json.loads(resumed.output[-1].parts[-1].content or "") == {
            "colour": "blue", "task": str(run.run_id)}  # same run, same task id


async def test_ungranted_caller_is_refused_with_the_rule(mesh: Mesh) -> None:
    home, running, _ = mesh
    async with client_for(running, "mallory") as client:  # enrolled, granted nothing
        with pytest.raises(ACPError) as refused:
            await client.run_sync(json_part({}), agent="worker.echo")
        error = refused.value.error
        assert error.code == "not_granted"
        assert error.data is not None and error.data.model_extra["stage"] == "authorize"
        assert "default deny" in error.data.model_extra["rule"]
        assert "default deny" in error.message
        with pytest.raises(ACPError, match="not_granted"):
            [e async for e in client.run_stream("x", agent="worker.echo")]
        raw = await client.client.post(f"{base(running)}/runs", json={
            "agent_name": "worker.echo", "input": [{"parts": [{"content": "x"}]}]})
        assert raw.status_code == 403
    records = await audit_records(home)
    assert any(r.get("code") == "not_granted" and r["envelope"]["sender"] == "mallory"
               for r in records)


async def test_missing_or_bad_token_is_401(mesh: Mesh) -> None:
    _, running, _ = mesh
    async with client_for(running, None) as client:
        with pytest.raises(ACPError, match="interlink token AGENT") as refused:
            await client.run_sync("x", agent="worker.echo")
        assert refused.value.error.code == "unauthenticated"
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{base(running)}/runs", json={"agent_name": "worker"},
                                 headers={"Authorization": "Bearer not.a.token"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


async def test_runs_belong_to_their_caller(mesh: Mesh) -> None:
    _, running, release = mesh
    async with client_for(running, "alice") as alice, client_for(running, "bob") as bob:
        run = await alice.run_async("go", agent="worker.slow")
        with pytest.raises(ACPError) as hidden:
            await bob.run_status(run_id=run.run_id)
        assert hidden.value.error.code == "not_found"
        with pytest.raises(ACPError):
            await bob.run_cancel(run_id=run.run_id)
        assert (await alice.run_status(run_id=run.run_id)).status == RunStatus.IN_PROGRESS
        cancelled = await alice.run_cancel(run_id=run.run_id)
        assert cancelled.status == RunStatus.CANCELLED
        release.set()
