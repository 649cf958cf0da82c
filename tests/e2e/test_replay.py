"""`interlink replay`: a recorded conversation (alice → planner.plan, which calls writer.write
and publishes an event) driven again through the gate — identical against unchanged agents,
the difference named against a changed writer; `--dry-run` sends nothing; `--simulate` steps
through the recording with the hub and every agent gone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from interlink import Agent, SkillContext, connect
from interlink.home import MeshHome

from ..helpers import HubProcess, interlink_cli, wait_until


def planner_and_writer(home: MeshHome, url: str, version: str) -> tuple[Agent, Agent]:
    planner = Agent("planner", credential=home.credential_path("planner"), hub=url)
    writer = Agent("writer", credential=home.credential_path("writer"), hub=url)

    @planner.skill("plan")
    async def plan(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        text = await ctx.call("writer", "write", {"topic": req["topic"]})
        await ctx.publish("plans.made", {"topic": req["topic"]})
        return {"plan": text}

    @writer.skill("write")
    async def write(ctx: SkillContext, req: dict[str, Any]) -> str:
        return f"{version}: all about {req['topic']}"

    return planner, writer


async def test_replay_reproduces_reports_a_change_and_simulates_offline(
        tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "h")
    home.init()
    home.add_agent("alice", calls=["planner.plan"])
    home.add_agent("planner", calls=["writer.write"])
    home.add_agent("writer")
    home.grant("planner", publish=["plans.*"])
    hub = HubProcess(home)
    await hub.start()
    cli = interlink_cli(home)
    try:
        planner, writer = planner_and_writer(home, hub.url, "v1")
        async with planner, writer:
            async with connect("alice", credential=home.credential_path("alice"),
                               hub=hub.url) as alice:
                assert await alice.call("planner", "plan", {"topic": "tides"},
                                        conversation="recorded-1") == {
                    "plan": "v1: all about tides"}

            async def recorded() -> bool:  # the hub writes its spans four times a second
                nonlocal dry
                dry = await asyncio.to_thread(cli, "replay", "recorded-1", "--dry-run")
                return dry.returncode == 0
            dry = None
            await wait_until(recorded, timeout=15, interval=0.1)
            assert dry is not None
            assert "alice → planner.plan" in dry.stdout and "tides" in dry.stdout
            assert "writer.write" not in dry.stdout  # nested calls are made again by agents
            same = await asyncio.to_thread(cli, "replay", "recorded-1", "--hub", hub.url)
            assert same.returncode == 0, same.stdout + same.stderr
            assert "matches the recording" in same.stdout
        changed_planner, changed_writer = planner_and_writer(home, hub.url, "v2")
        async with changed_planner, changed_writer:
            differs = await asyncio.to_thread(cli, "replay", "recorded-1", "--hub", hub.url)
        assert differs.returncode == 1, differs.stdout + differs.stderr
        assert "differs from the recording" in differs.stdout
        assert "v1: all about tides" in differs.stdout and "v2: all about tides" in differs.stdout
    finally:
        hub.stop()
    offline = await asyncio.to_thread(cli, "replay", "recorded-1", "--simulate")
    assert offline.returncode == 0, offline.stderr
    lines = offline.stdout
    assert "alice → planner.plan" in lines and "planner → writer.write" in lines
    assert "v1: all about tides" in lines and "event plans.made" in lines
    missing = await asyncio.to_thread(cli, "replay", "never-recorded", "--simulate")
    assert missing.returncode != 0 and "nothing recorded" in missing.stderr
