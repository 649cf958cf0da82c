"""Every read taints the reader. For each way data can reach an agent (memory get, list,
history, watch — first delivery and after a reconnect —, reads inside a skill and an event
handler, live / durable / replayed events, call replies, calls delivered to it, and the A2A,
ACP and MCP edges), the agent first sends harmless data to an uncleared agent in a fresh
conversation (allowed: the benign twin), then reads confidential `phi` data that way, then
tries the same send again in another fresh conversation: refused, because it now carries what
it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest
from acp_sdk.client import Client as AcpClient
from acp_sdk.models import MessagePart
from google.protobuf.json_format import ParseDict
from mcp import Client as McpClient
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client

from interlink import Agent, CallError, Event, EventContext, GateDenied, Mesh, SkillContext, connect
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.policy import Classification, Clearance
from interlink.server import RunningHub, background_hub

from ..helpers import env_python, make_home, wait_until

PHI = Clearance(level="confidential", tags=["phi"])
RECORD = {"patient": 42, "diagnosis": "hypertension"}


def build_home(root: Path) -> MeshHome:
    home = make_home(root, {"nurse": ["mole.hear"], "desk": ["mole.look"],
                            "mole": ["outsider.note", "nurse.chart"], "outsider": []})
    policy = home.load_policy()
    a = policy.agents
    a["nurse"].label = {"level": "confidential", "tags": ["phi"]}  # all it sends is phi
    a["nurse"].clearance = PHI
    a["nurse"].memory = {"ward": "read-write"}
    a["nurse"].publish = ["ward.*"]
    a["desk"].publish = ["desk.*"]
    a["mole"].clearance = PHI
    a["mole"].memory = {"ward": "read"}
    a["mole"].subscribe = ["ward.*", "desk.*"]
    policy.namespaces = {"ward": Classification(level="confidential", tags=["phi"])}
    policy.topics = {"ward.*": Classification(level="confidential", tags=["phi"])}
    home.save_policy(policy)
    return home


class World:
    def __init__(self, home: MeshHome, hub: RunningHub) -> None:
        self.home, self.hub = home, hub

    def client(self, name: str) -> Mesh:
        return connect(name, credential=self.home.credential_path(name), hub=self.hub.url)

    def agent(self, name: str) -> Agent:
        return Agent(name, credential=self.home.credential_path(name), hub=self.hub.url)

    async def leaks(self) -> bool:
        """Whether mole can send harmless data to the uncleared outsider, in a conversation
        it has never used."""
        async with self.client("mole") as mole:
            try:
                await mole.call("outsider", "note", {"x": 1}, conversation=uuid.uuid4().hex)
            except GateDenied as exc:
                assert (exc.stage, exc.code) == ("label", "not_cleared"), exc
                assert "phi" in exc.reason
                return False
        return True

    async def nurse_writes(self, key: str = "42") -> None:
        async with self.client("nurse") as nurse:
            await nurse.memory("ward").put(key, RECORD)

    async def nurse_publishes(self) -> dict[str, Any]:
        async with self.client("nurse") as nurse:
            return await nurse.publish("ward.rounds", RECORD)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    home = build_home(tmp_path / "home")
    async with background_hub(home) as hub:
        world = World(home, hub)
        outsider, nurse = world.agent("outsider"), world.agent("nurse")

        @outsider.skill("note")
        async def note(ctx: SkillContext, req: Any) -> str:
            return "noted"

        @nurse.skill("chart")
        async def chart(ctx: SkillContext, req: Any) -> dict[str, Any]:
            return RECORD

        async with outsider, nurse:
            yield world


Read = Callable[[World], Awaitable[None]]


async def memory_get(w: World) -> None:
    await w.nurse_writes()
    async with w.client("mole") as mole:
        assert (await mole.memory("ward").get("42")) is not None


async def memory_list(w: World) -> None:
    await w.nurse_writes()
    async with w.client("mole") as mole:
        assert len(await mole.memory("ward").list()) == 1


async def memory_history(w: World) -> None:
    await w.nurse_writes()
    async with w.client("mole") as mole:
        assert len(await mole.memory("ward").history("42")) == 1


async def memory_watch(w: World) -> None:
    async with w.client("mole") as mole:
        changes = await mole.memory("ward").watch()
        await w.nurse_writes()
        assert (await asyncio.wait_for(changes.__anext__(), 5)).key == "42"


async def memory_watch_after_reconnect(w: World) -> None:
    async with w.client("mole") as mole:
        changes = await mole.memory("ward").watch()
        ws = mole.connection._ws
        assert ws is not None
        await ws.aclose()  # dropped; the SDK renews the watch after it reconnects
        await w.nurse_writes()
        assert (await asyncio.wait_for(changes.__anext__(), 10)).key == "42"
        assert mole.connection.reconnects >= 1


async def memory_in_a_skill(w: World) -> None:
    await w.nurse_writes()
    mole = w.agent("mole")

    @mole.skill("look")
    async def look(ctx: SkillContext, req: Any) -> str:
        entry = await ctx.memory("ward").get("42")
        return "seen" if entry else "nothing"

    async with mole, w.client("desk") as desk:  # desk carries nothing confidential
        with pytest.raises(CallError) as withheld:  # and is not cleared for what mole now is
            await desk.call("mole", "look", {})
        assert withheld.value.code == "not_cleared"


async def memory_in_an_event_handler(w: World) -> None:
    await w.nurse_writes()
    mole, seen = w.agent("mole"), asyncio.Event()

    @mole.on_event("desk.*")
    async def look(ctx: EventContext, event: Event) -> None:
        if await ctx.memory("ward").get("42"):
            seen.set()

    async with mole, w.client("desk") as desk:
        await desk.publish("desk.shift", {"start": True})
        await asyncio.wait_for(seen.wait(), 5)


async def event_live(w: World) -> None:
    async with w.client("mole") as mole:
        sub = await mole.subscribe("ward.*")
        await w.nurse_publishes()
        assert (await sub.get(5)).data == RECORD


async def event_durable(w: World) -> None:
    async with w.client("mole") as mole:
        sub = await mole.subscribe("ward.*", durable="mole-ward")
        await w.nurse_publishes()
        event = await sub.get(5)
        await event.ack()


async def event_replayed(w: World) -> None:
    await w.nurse_publishes()
    async with w.client("mole") as mole:
        sub = await mole.subscribe("ward.*", deliver="all")
        assert (await sub.get(5)).data == RECORD


async def call_reply(w: World) -> None:
    async with w.client("mole") as mole:
        assert await mole.call("nurse", "chart", {}) == RECORD


async def call_delivered(w: World) -> None:
    mole = w.agent("mole")

    @mole.skill("hear")
    async def hear(ctx: SkillContext, req: Any) -> str:
        return "heard"

    async with mole, w.client("nurse") as nurse:
        assert await nurse.call("mole", "hear", RECORD) == "heard"


def _base(w: World) -> str:
    return f"http://127.0.0.1:{w.hub.port}"


async def a2a_edge(w: World) -> None:
    token = issue_token(w.hub.hub.key, "mole")
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as http:
        client = await create_client(f"{_base(w)}/a2a/nurse",
                                     client_config=ClientConfig(streaming=False,
                                                                httpx_client=http))
        msg = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex)
        msg.parts.append(ParseDict({"data": {}}, Part()))
        request = SendMessageRequest(message=msg)
        request.metadata.update({"skill": "chart"})
        events = [event async for event in client.send_message(request)]
        assert events


async def acp_edge(w: World) -> None:
    token = issue_token(w.hub.hub.key, "mole")
    async with AcpClient(base_url=f"{_base(w)}/acp", timeout=30,
                         headers={"Authorization": f"Bearer {token}"}) as client:
        run = await client.run_sync(MessagePart(content=json.dumps({}),
                                                content_type="application/json"),
                                    agent="nurse.chart")
        assert run.output


async def mcp_edge(w: World) -> None:
    await w.nurse_writes()
    command = StdioServerParameters(
        command=sys.executable, args=["-m", "interlink", "mcp", "--agent", "mole", "--home",
                                      str(w.home.root), "--hub", w.hub.url], env=env_python())
    with (w.home.root / "mcp.log").open("a") as errlog:
        async with McpClient(stdio_client(command, errlog=errlog), cache=None) as client:
            result = await client.call_tool("memory_get", {"namespace": "ward", "key": "42"})
            assert not result.is_error, result


READS: dict[str, Read] = {
    "memory get": memory_get, "memory list": memory_list, "memory history": memory_history,
    "memory watch": memory_watch, "memory watch after a reconnect": memory_watch_after_reconnect,
    "memory read in a skill": memory_in_a_skill,
    "memory read in an event handler": memory_in_an_event_handler,
    "live event": event_live, "durable event": event_durable, "replayed event": event_replayed,
    "call reply": call_reply, "call delivered to it": call_delivered,
    "A2A edge reply": a2a_edge, "ACP edge reply": acp_edge, "MCP edge memory read": mcp_edge,
}


@pytest.mark.parametrize("path", list(READS))
async def test_every_read_taints_the_reader(world: World, path: str, score: Any) -> None:
    before = await world.leaks()  # the benign twin: before reading, mole may send
    assert before, "harmless data to the outsider"
    await READS[path](world)
    with contextlib.suppress(AssertionError):  # deliveries taint as they are sent
        await wait_until(lambda: _tainted(world), timeout=2)
    leaked = await world.leaks()
    score(f"11 read without taint ({path})", attack_stopped=not leaked, benign_ok=before)
    assert not leaked, f"{path}: mole read phi and could still pass data to an uncleared agent"
    assert "phi" in (await world.hub.hub.taint.of_agent("mole")).tags


async def _tainted(world: World) -> bool:
    return "phi" in (await world.hub.hub.taint.of_agent("mole")).tags
