"""The MCP bridge against a real hub, driven by the official MCP client: over stdio (the bridge
as a subprocess, as an MCP host starts it) and over streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents
from pydantic import BaseModel

from interlink import Agent, ConnectionLost, SkillContext
from interlink.edges.mcp import serve_http
from interlink.envelope import HUB
from interlink.home import MeshHome
from interlink.server import RunningHub, background_hub

from ..helpers import audit_records, env_python, free_port, make_home, wait_until

TOOLS = {"list_agents", "call_skill", "publish", "memory_get", "memory_put", "memory_list"}


class Topic(BaseModel):
    topic: str
    words: int = 100


@pytest.fixture
def mcp_home(tmp_path: Path) -> MeshHome:
    """`bridge` (the MCP server's agent) may call writer.draft and writer.crash, publish on
    notes.*, and read-write the `notes` namespace; nothing else."""
    home = make_home(tmp_path / "home", {"bridge": ["writer.draft", "writer.crash"],
                                         "writer": [], "outsider": []})
    home.grant("bridge", publish=["notes.*"], memory={"notes": "read-write"})
    return home


@pytest.fixture
async def hub(mcp_home: MeshHome) -> AsyncIterator[RunningHub]:
    async with background_hub(mcp_home) as running:
        yield running


def writer(home: MeshHome, hub: RunningHub) -> Agent:
    agent = Agent("writer", credential=home.credential_path("writer"), hub=hub.url,
                  description="writes drafts")

    @agent.skill("draft", input_schema=Topic, output_schema={"type": "object"})
    async def draft(ctx: SkillContext, req: Topic) -> dict[str, Any]:
        """Write a draft about a topic."""
        return {"text": f"{req.topic.upper()} in {req.words} words", "caller": ctx.caller}

    @agent.skill("secret")
    async def secret(ctx: SkillContext, req: Any) -> str:
        return "nobody may call this"

    @agent.skill("crash")
    async def crash(ctx: SkillContext, req: Any) -> None:
        raise ValueError("the pen broke")

    return agent


def bridge_command(home: MeshHome, agent: str, hub_url: str) -> StdioServerParameters:
    """How an MCP host starts the bridge over stdio: `interlink mcp --agent NAME`."""
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "interlink", "mcp", "--agent", agent, "--home",
                                       str(home.root), "--hub", hub_url],
                                 env=env_python())


@contextlib.asynccontextmanager
async def stdio_bridge(home: MeshHome, hub: RunningHub, agent: str = "bridge"
                       ) -> AsyncIterator[Client]:
    with (home.root / f"mcp-{agent}.log").open("a") as errlog:
        async with Client(stdio_client(bridge_command(home, agent, hub.url), errlog=errlog),
                          cache=None) as client:
            yield client


def bridge_connected(hub: RunningHub) -> bool:
    """Whether the hub holds a connection of the bridge (a client connection: no card)."""
    return any(s.agent == "bridge" and not s.closed for s in hub.hub.registry.by_id.values())


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_tools_are_listed_with_schemas(mcp_home: MeshHome, hub: RunningHub) -> None:
    async with stdio_bridge(mcp_home, hub) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    assert all(t.description for t in tools.values())
    call = tools["call_skill"].input_schema
    assert call["required"] == ["agent", "skill"]
    assert {"agent", "skill", "input", "timeout"} <= set(call["properties"])
    assert "input_schema" in call["properties"]["input"]["description"]
    put = tools["memory_put"].input_schema
    assert put["required"] == ["namespace", "key", "value"]
    assert "expect" in put["properties"]
    assert tools["publish"].output_schema is not None
    assert "topic_seq" in tools["publish"].output_schema["properties"]
    assert tools["list_agents"].annotations is not None
    assert tools["list_agents"].annotations.read_only_hint is True


async def test_list_agents_and_call_a_skill(mcp_home: MeshHome, hub: RunningHub) -> None:
    async with writer(mcp_home, hub), stdio_bridge(mcp_home, hub) as client:
        listed = await client.call_tool("list_agents", {})
        assert not listed.is_error
        agents = {a["name"]: a for a in (listed.structured_content or {})["agents"]}
        assert set(agents) == {"bridge", "writer", "outsider"}
        assert agents["writer"]["connected"] and not agents["outsider"]["connected"]
        draft = next(s for s in agents["writer"]["skills"] if s["id"] == "draft")
        assert draft["description"] == "Write a draft about a topic."
        assert draft["input_schema"]["required"] == ["topic"]

        result = await client.call_tool("call_skill", {
            "agent": "writer", "skill": "draft", "input": {"topic": "meshes", "words": 5}})
        assert not result.is_error, text(result)
        output = {"text": "MESHES in 5 words", "caller": "bridge"}
        assert result.structured_content == {"result": output}
        assert json.loads(text(result)) == output


async def test_refusals_and_failures_are_mcp_tool_errors(mcp_home: MeshHome,
                                                        hub: RunningHub) -> None:
    async with writer(mcp_home, hub), stdio_bridge(mcp_home, hub) as client:
        refused = await client.call_tool("call_skill", {"agent": "writer", "skill": "secret"})
        assert refused.is_error
        message = text(refused)
        assert "stage: authorize" in message and "code: not_granted" in message
        assert "rule: default deny: no entry in agents.bridge.calls matches writer.secret" \
            in message

        crashed = await client.call_tool("call_skill", {"agent": "writer", "skill": "crash"})
        assert crashed.is_error and "the pen broke" in text(crashed)

        bad = await client.call_tool("call_skill", {"agent": "writer", "skill": "draft",
                                                    "input": {"words": 3}})
        assert bad.is_error and "topic" in text(bad)  # the agent checks its input schema


async def test_publish_and_memory_when_granted_refused_when_not(mcp_home: MeshHome,
                                                               hub: RunningHub) -> None:
    async with stdio_bridge(mcp_home, hub) as client:
        first = await client.call_tool("publish", {"topic": "notes.daily", "data": {"n": 1}})
        second = await client.call_tool("publish", {"topic": "notes.daily", "data": {"n": 2}})
        assert not first.is_error, text(first)
        assert first.structured_content is not None and second.structured_content is not None
        assert (first.structured_content["topic_seq"], second.structured_content["topic_seq"]) \
            == (1, 2)
        assert second.structured_content["seq"] > first.structured_content["seq"]
        denied = await client.call_tool("publish", {"topic": "secrets.plans", "data": {}})
        assert denied.is_error
        assert "not_granted" in text(denied) and "agents.bridge.publish" in text(denied)

        absent = await client.call_tool("memory_get", {"namespace": "notes", "key": "k"})
        assert absent.structured_content == {"namespace": "notes", "key": "k", "value": None,
                                             "revision": 0, "by": None, "ts": None}
        put = await client.call_tool("memory_put", {"namespace": "notes", "key": "k",
                                                    "value": {"tone": "plain"}, "expect": 0})
        assert not put.is_error, text(put)
        assert put.structured_content is not None
        revision = put.structured_content["revision"]
        got = await client.call_tool("memory_get", {"namespace": "notes", "key": "k"})
        assert got.structured_content is not None
        assert (got.structured_content["value"], got.structured_content["revision"],
                got.structured_content["by"]) == ({"tone": "plain"}, revision, "bridge")
        stale = await client.call_tool("memory_put", {"namespace": "notes", "key": "k",
                                                      "value": "x", "expect": 0})
        assert stale.is_error and "code: stale_revision" in text(stale)
        await client.call_tool("memory_put", {"namespace": "notes", "key": "other", "value": 2})
        listed = await client.call_tool("memory_list", {"namespace": "notes", "prefix": "k"})
        assert listed.structured_content is not None
        assert [e["key"] for e in listed.structured_content["entries"]] == ["k"]

        for name, args in (("memory_get", {"namespace": "vault", "key": "k"}),
                           ("memory_put", {"namespace": "vault", "key": "k", "value": 1}),
                           ("memory_list", {"namespace": "vault"})):
            refused = await client.call_tool(name, args)
            assert refused.is_error and "not_granted" in text(refused), name
            assert "agents.bridge.memory" in text(refused), name


async def test_resources_list_the_agents_and_read_a_card(mcp_home: MeshHome,
                                                        hub: RunningHub) -> None:
    async with writer(mcp_home, hub), stdio_bridge(mcp_home, hub) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"interlink://agents", "interlink://agents/writer/card"} <= uris
        assert "interlink://agents/outsider/card" not in uris  # never connected: no card
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["interlink://agents/{name}/card"]

        listing = (await client.read_resource("interlink://agents")).contents[0]
        assert isinstance(listing, TextResourceContents)
        assert listing.mime_type == "application/json"
        assert {a["name"] for a in json.loads(listing.text)["agents"]} == {
            "bridge", "writer", "outsider"}

        card = (await client.read_resource("interlink://agents/writer/card")).contents[0]
        assert isinstance(card, TextResourceContents)
        data = json.loads(card.text)
        assert data["name"] == "writer" and data["description"] == "writes drafts"
        assert {s["id"] for s in data["skills"]} == {"draft", "secret", "crash"}

        with pytest.raises(MCPError, match="never connected"):
            await client.read_resource("interlink://agents/outsider/card")


async def test_the_audit_names_the_bridge_agent(mcp_home: MeshHome, hub: RunningHub) -> None:
    async with writer(mcp_home, hub), stdio_bridge(mcp_home, hub) as client:
        await client.call_tool("call_skill", {"agent": "writer", "skill": "draft",
                                              "input": {"topic": "audit"}})
        await client.call_tool("call_skill", {"agent": "writer", "skill": "secret"})
        await client.call_tool("publish", {"topic": "notes.audit", "data": {}})
    await wait_until(lambda: not bridge_connected(hub))  # the host left: the bridge hung up
    records = [r for r in await audit_records(mcp_home) if r["event"] == "gate"]
    by_bridge = {(r["envelope"]["kind"], r["envelope"]["target"], r["decision"])
                 for r in records if r.get("envelope", {}).get("sender") == "bridge"}
    assert {("hello", HUB, "accepted"), ("call", "writer.draft", "accepted"),
            ("call", "writer.secret", "refused"), ("publish", "notes.audit", "accepted")
            } <= by_bridge
    refused = next(r for r in records if r.get("envelope", {}).get("target") == "writer.secret")
    assert refused["code"] == "not_granted" and "agents.bridge.calls" in refused["rule"]


async def test_streamable_http(mcp_home: MeshHome, hub: RunningHub) -> None:
    port = free_port()
    server = asyncio.ensure_future(serve_http(mcp_home, "bridge", hub=hub.url, port=port))
    try:
        async with writer(mcp_home, hub):
            await wait_until(lambda: bridge_connected(hub), 10)
            async with Client(f"http://127.0.0.1:{port}/mcp", cache=None) as client:
                assert {t.name for t in (await client.list_tools()).tools} == TOOLS
                result = await client.call_tool("call_skill", {
                    "agent": "writer", "skill": "draft", "input": {"topic": "http"}})
                assert result.structured_content == {
                    "result": {"text": "HTTP in 100 words", "caller": "bridge"}}
                refused = await client.call_tool("call_skill", {"agent": "writer",
                                                                "skill": "secret"})
                assert refused.is_error and "not_granted" in text(refused)
                card = (await client.read_resource("interlink://agents/writer/card")).contents
                assert isinstance(card[0], TextResourceContents)
                assert json.loads(card[0].text)["name"] == "writer"
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    await wait_until(lambda: not bridge_connected(hub))  # stopping closed its connection


async def test_without_a_hub_the_bridge_stops_and_says_why(mcp_home: MeshHome) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(ConnectionLost, match="cannot reach the hub"):
        await serve_http(mcp_home, "bridge", hub=nowhere, port=free_port())
    log = mcp_home.root / "mcp-bridge.log"
    closed = pytest.RaisesExc(MCPError, match="Connection closed")
    with log.open("a") as errlog, pytest.RaisesGroup(closed, flatten_subgroups=True):
        async with Client(stdio_client(bridge_command(mcp_home, "bridge", nowhere),
                                       errlog=errlog), cache=None):
            pass
    said = log.read_text()
    assert "cannot reach the hub" in said and "interlink serve" in said  # the CLI's own words


async def test_an_mcp_hosts_trace_continues_through_the_mesh(mcp_home: MeshHome,
                                                            hub: RunningHub) -> None:
    """An MCP host that sends W3C trace context in a request's `_meta` (as the MCP SDKs do)
    finds the mesh call the bridge made for it in the same trace."""
    trace_id = "5e" * 16
    async with writer(mcp_home, hub), stdio_bridge(mcp_home, hub) as client:
        result = await client.call_tool(
            "call_skill", {"agent": "writer", "skill": "draft", "input": {"topic": "t"}},
            meta={"traceparent": f"00-{trace_id}-{'7a' * 8}-01"})  # type: ignore[typeddict-unknown-key]
        assert not result.is_error, text(result)
    assert hub.hub.traces is not None
    await hub.hub.traces.flush()
    from interlink.services.traces import spans_of
    spans = spans_of(await hub.hub.traces.log.read(limit=10_000))
    calls = [s for s in spans if s["name"] == "call writer.draft"]
    assert calls and all(s["trace_id"] == trace_id for s in calls), calls
