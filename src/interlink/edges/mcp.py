"""The MCP bridge: an MCP server that acts on the mesh as one enrolled agent.

An MCP host (an IDE, a desktop assistant, any LLM runtime) runs the bridge over stdio or
connects to it over streamable HTTP, and sees the mesh as tools and resources:

    list_agents  call_skill  publish  memory_get  memory_put  memory_list     (tools)
    interlink://agents   interlink://agents/{name}/card                        (resources)

The bridge is the enrolled agent AGENT: it opens one SDK connection with AGENT's credential when
the MCP server starts and closes it when the server stops, and every tool goes through that
connection. So the hub's gate authenticates the bridge as AGENT, AGENT's grants in mesh.yaml
decide what it may do, and the audit chain records every action under AGENT's name; the bridge
makes no decision of its own. A refusal reaches the host as a tool error naming the gate's
stage, code, reason and rule. Only who is enrolled and their cards are read from the store, as
`interlink agents` reads them: that is looking at the mesh, not acting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, Resource, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from ..errors import CallError, GateDenied, InterlinkError
from ..home import MeshHome
from ..sdk import MemoryEntry, Mesh, connect
from ..services.registry import AgentStatus, Registry, SkillCard
from ..store import open_store

T = TypeVar("T")
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
Namespace = Annotated[str, Field(description="Shared-memory namespace, e.g. 'blog'.")]
Key = Annotated[str, Field(description="Key inside the namespace, e.g. 'style-guide'.")]


class AgentInfo(BaseModel):
    name: str
    connected: bool = Field(description="Serving now (a call to an agent that is not waits for "
                                        "it to connect, until the call's timeout).")
    description: str
    skills: list[SkillCard] = Field(description="Each skill's id, description, and the JSON "
                                    "Schemas of its input and output; empty until the agent "
                                    "has connected once.")


class AgentList(BaseModel):
    agents: list[AgentInfo]


class Published(BaseModel):
    seq: int = Field(description="The event's position in the mesh's event log.")
    topic: str
    topic_seq: int = Field(description="The event's number on its topic.")
    duplicate: bool = Field(description="True when this event was already stored.")


class Entry(BaseModel):
    namespace: str
    key: str
    value: Any = Field(default=None, description="The stored JSON value (null when absent).")
    revision: int = Field(description="The key's revision; 0 means the key is absent.")
    by: str | None = Field(default=None, description="The agent that wrote this revision.")
    ts: float | None = Field(default=None, description="When it was written (Unix time).")


class Entries(BaseModel):
    entries: list[Entry]


class Written(BaseModel):
    namespace: str
    key: str
    revision: int = Field(description="The key's new revision (pass it as `expect` next time).")


def _explain(exc: InterlinkError) -> str:
    """A refusal or failure as one line that names everything the hub said."""
    if not isinstance(exc, GateDenied | CallError):
        return str(exc)
    verdict = "refused by the hub" if isinstance(exc, GateDenied) else "the call failed"
    parts = [f"stage: {exc.stage}", f"code: {exc.code}", f"reason: {exc.reason}",
             f"rule: {exc.rule or '(none)'}"]
    if detail := getattr(exc, "detail", None):
        parts.append(f"detail: {json.dumps(detail)}")
    return f"{verdict} ({'; '.join(parts)})"


def _entry(namespace: str, key: str, entry: MemoryEntry | None) -> Entry:
    if entry is None:
        return Entry(namespace=namespace, key=key, revision=0)
    return Entry.model_validate(entry, from_attributes=True)


class MeshBridge(MCPServer[None]):
    """The MCP server: its tools act through one hub connection as `agent`, opened when the
    server starts (its lifespan) and closed when it stops."""

    def __init__(self, home: MeshHome, agent: str, *, hub: str | None = None) -> None:
        super().__init__(
            name=f"interlink-{agent}", log_level="WARNING", lifespan=self._connected,
            instructions=(
                f"You act on an Interlink agent mesh as the enrolled agent {agent!r}. Use "
                "list_agents to see the agents and their skills (with input schemas), call_skill "
                "to call one, publish to send an event, and memory_* for shared memory. The hub "
                f"allows only what mesh.yaml grants {agent!r}; a refusal names the rule that "
                "refused, so report it rather than retrying."))
        self.home, self.agent, self.hub = home, agent, hub
        self._mesh: Mesh | None = None
        self.failure: InterlinkError | None = None  # why the hub connection did not open
        for tool, hints in ((self.list_agents, READ_ONLY), (self.call_skill, WRITES),
                            (self.publish, WRITES), (self.memory_get, READ_ONLY),
                            (self.memory_put, WRITES), (self.memory_list, READ_ONLY)):
            self.add_tool(tool, description=inspect.getdoc(tool), annotations=hints)
        json_type = "application/json"
        self.resource("interlink://agents", name="agents", mime_type=json_type,
                      description="Every enrolled agent: connected or not, and its skills."
                      )(self.agents_resource)
        self.resource("interlink://agents/{name}/card", name="agent-card", mime_type=json_type,
                      description="An agent's card: description, version, skills and schemas."
                      )(self.card_resource)

    @contextlib.asynccontextmanager
    async def _connected(self, _: MCPServer[None]) -> AsyncIterator[None]:
        mesh = connect(self.agent, credential=self.home.credential_path(self.agent), hub=self.hub)
        try:
            self._mesh = await mesh.__aenter__()
        except InterlinkError as exc:
            self.failure = exc
            raise
        try:
            yield
        finally:
            self._mesh = None
            await mesh.aclose()

    async def _as_agent(self, action: Callable[[Mesh], Awaitable[T]]) -> T:
        """Do `action` through the hub as the bridge's agent; what the hub says is a tool error."""
        if self._mesh is None:
            raise ToolError("the bridge is not connected to the hub")
        try:
            return await action(self._mesh)
        except InterlinkError as exc:
            raise ToolError(_explain(exc)) from exc

    async def _statuses(self) -> list[AgentStatus]:
        if not self.home.store_exists():
            raise ResourceError(f"no store at {self.home.db_path}: the hub has not run here")
        async with open_store(self.home.store_url()) as store:
            return await Registry(await store.kv("registry")).statuses(self.home.load_policy())

    # -- tools -------------------------------------------------------------------------------

    async def list_agents(self) -> AgentList:
        """List the mesh's enrolled agents: whether each is connected, what it does, and its
        skills with the JSON Schema each skill's input must match. Call this before call_skill."""
        return AgentList(agents=[
            AgentInfo(name=s.name, connected=s.connected, description=s.description,
                      skills=s.card.skills if s.card else []) for s in await self._statuses()])

    async def call_skill(
        self,
        agent: Annotated[str, Field(description="The agent to call, as list_agents names it.")],
        skill: Annotated[str, Field(description="The skill id on that agent.")],
        input: Annotated[dict[str, Any] | None, Field(
            description="The skill's input; must match the skill's input_schema.")] = None,
        timeout: Annotated[float, Field(gt=0, le=3600,
                                        description="Seconds to wait for the answer.")] = 30,
    ) -> CallToolResult:
        """Call a skill of another agent on the mesh and return its output (JSON, under
        `result`). The hub allows only calls granted to this bridge's agent; a refusal names
        the stage, code, reason and rule. An offline agent gets the call when it connects."""
        output = await self._as_agent(lambda mesh: mesh.call(agent, skill, input, timeout=timeout))
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(output))],
                              structured_content={"result": output})

    async def publish(
        self,
        topic: Annotated[str, Field(description="Dot-separated, e.g. 'blog.drafts.created'.")],
        data: Annotated[dict[str, Any], Field(description="The event's payload (must match the "
                                                          "topic's registered schema, if any).")],
    ) -> Published:
        """Publish an event on a topic; returns once the hub has stored it, with its position
        in the event log (seq) and on its topic (topic_seq). Subscribers receive it."""
        answer = await self._as_agent(lambda mesh: mesh.publish(topic, data))
        return Published(seq=answer["seq"], topic=answer.get("topic", topic),
                         topic_seq=answer["topic_seq"], duplicate=answer.get("duplicate", False))

    async def memory_get(self, namespace: Namespace, key: Key) -> Entry:
        """Read a key of shared memory: its value, revision (0 when absent) and writer."""
        return _entry(namespace, key, await self._as_agent(
            lambda mesh: mesh.memory(namespace).get(key)))

    async def memory_put(
        self, namespace: Namespace, key: Key,
        value: Annotated[Any, Field(description="Any JSON value.")],
        expect: Annotated[int | None, Field(ge=0, description=(
            "Write only if the key is still at this revision (0: only if absent); the write is "
            "refused with code stale_revision otherwise. Omit to write unconditionally."))] = None,
    ) -> Written:
        """Write a key of shared memory; returns the new revision. Use memory_get's revision as
        `expect` to avoid overwriting someone else's change."""
        def write(mesh: Mesh) -> Awaitable[int]:
            memory = mesh.memory(namespace)
            return (memory.put(key, value) if expect is None
                    else memory.update(key, value, expect=expect))
        return Written(namespace=namespace, key=key, revision=await self._as_agent(write))

    async def memory_list(
        self, namespace: Namespace,
        prefix: Annotated[str, Field(description="Only keys starting with this.")] = "",
    ) -> Entries:
        """List the live keys of a shared-memory namespace (values and revisions), by key."""
        entries = await self._as_agent(lambda mesh: mesh.memory(namespace).list(prefix))
        return Entries(entries=[_entry(namespace, e.key, e) for e in entries])

    # -- resources ---------------------------------------------------------------------------

    async def agents_resource(self) -> str:
        return (await self.list_agents()).model_dump_json(indent=2)

    async def card_resource(self, name: str) -> str:
        card = next((s.card for s in await self._statuses() if s.name == name), None)
        if card is None:
            raise ResourceNotFoundError(f"{name!r} is not enrolled or has never connected")
        return card.model_dump_json(indent=2)

    async def list_resources(self) -> list[Resource]:
        """The static resources, and one card per agent that has connected at least once."""
        try:
            statuses = await self._statuses()
        except ResourceError:  # no store yet: only the static resources
            statuses = []
        return [*await super().list_resources(), *(
            Resource(uri=f"interlink://agents/{s.name}/card", name=f"{s.name}-card",
                     description=f"The card of {s.name}: {s.description}".rstrip(": "),
                     mime_type="application/json") for s in statuses if s.card is not None)]


def build_server(home: MeshHome, agent: str, *, hub: str | None = None) -> MeshBridge:
    """The MCP server acting as `agent` (its connection opens when the server starts)."""
    return MeshBridge(home, agent, hub=hub)


async def serve_stdio(home: MeshHome, agent: str, *, hub: str | None = None) -> None:
    """Serve MCP over stdin/stdout until the host closes them."""
    bridge = build_server(home, agent, hub=hub)
    try:
        await bridge.run_stdio_async()
    except BaseException:
        if bridge.failure is not None:  # raised plainly, not inside the server's task groups
            raise bridge.failure from None
        raise


async def serve_http(home: MeshHome, agent: str, *, hub: str | None = None,
                     host: str = "127.0.0.1", port: int = 7751) -> None:
    """Serve MCP over streamable HTTP at http://HOST:PORT/mcp until stopped (cancelling this
    coroutine shuts the server down cleanly, closing the mesh connection)."""
    bridge = build_server(home, agent, hub=hub)
    server = uvicorn.Server(uvicorn.Config(bridge.streamable_http_app(host=host), host=host,
                                           port=port, lifespan="on", log_level="warning"))

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn's answer to a failed startup (e.g. the hub connection)
            raise bridge.failure or InterlinkError("the MCP server did not start") from None

    running = asyncio.ensure_future(serve())
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        server.should_exit = True
        await running
        raise
