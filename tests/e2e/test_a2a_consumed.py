"""A remote agent built with a2a-sdk (its own server, nothing of Interlink) joins the mesh by
URL; mesh agents call it by name through the gate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part
from a2a.utils.signing import create_agent_card_signer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette

from interlink import GateDenied, SkillFailed, connect
from interlink.home import MeshHome
from interlink.server import background_hub

from ..helpers import audit_records, free_port, make_home, wait_until


class Shouter(AgentExecutor):
    """A plain a2a-sdk agent: upper-cases text, fails on 'fail'."""

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        assert ctx.message is not None
        task = ctx.current_task or new_task_from_user_message(ctx.message)
        await queue.enqueue_event(task)
        updater = TaskUpdater(queue, task.id, task.context_id)
        await updater.start_work()
        text = ctx.get_user_input()
        if text == "fail":
            await updater.failed(updater.new_agent_message([Part(text="I refuse")]))
            return
        await updater.add_artifact([Part(text=text.upper())], name="shout")
        await updater.complete()

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        await TaskUpdater(queue, ctx.task_id or "", ctx.context_id or "").cancel()


SEEN: list[str] = []
"""The traceparent headers the remote agent was sent."""


@contextlib.asynccontextmanager
async def remote_agent(key: Ed25519PrivateKey | None) -> AsyncIterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name="Shouter", description="Shouts what you say", version="1.0.0",
        supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", protocol_version="1.0",
                                             url=f"{url}/rpc")],
        capabilities=AgentCapabilities(streaming=False), default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="shout", name="Shout", description="Upper-case text",
                           tags=["demo"])])
    if key is not None:
        card = create_agent_card_signer(key, {"alg": "EdDSA", "kid": "k1", "typ": "JOSE"})(card)
    handler = DefaultRequestHandler(agent_executor=Shouter(), task_store=InMemoryTaskStore(),
                                    agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card),
                            *create_jsonrpc_routes(handler, rpc_url="/rpc")])
    inner = app

    async def seeing(scope: Any, receive: Any, send: Any) -> None:  # what the remote got
        if scope["type"] == "http" and scope["path"] == "/rpc":
            SEEN.append(dict(scope["headers"]).get(b"traceparent", b"").decode())
        await inner(scope, receive, send)
    server = uvicorn.Server(uvicorn.Config(seeing, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        await task


def pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
def home(tmp_path: Path) -> MeshHome:
    return make_home(tmp_path / "home", {"caller": ["shouter.*"], "stranger": []})


async def remote_ready(running: Any, name: str) -> None:
    await wait_until(lambda: running.hub.registry.session(name) is not None, timeout=15)


async def test_mesh_agent_calls_a_remote_a2a_agent_by_name(home: MeshHome) -> None:
    key = Ed25519PrivateKey.generate()
    async with remote_agent(key) as url:
        home.add_agent("shouter", a2a={"url": url, "card_key": pem(key)})
        async with background_hub(home) as running:
            await remote_ready(running, "shouter")
            async with connect("caller", credential=home.credential_path("caller"),
                               hub=running.url) as mesh:
                assert await mesh.call("shouter", "shout", "hello mesh") == "HELLO MESH"
                with pytest.raises(SkillFailed, match="I refuse"):
                    await mesh.call("shouter", "shout", "fail")
            async with connect("stranger", credential=home.credential_path("stranger"),
                               hub=running.url) as other:
                with pytest.raises(GateDenied) as refused:
                    await other.call("shouter", "shout", "hi")
                assert refused.value.code == "not_granted"
            card = await running.hub.registry.card("shouter")
            assert card is not None and [s.id for s in card.skills] == ["shout"]
    records = await audit_records(home)
    joined = [r for r in records if r["event"] == "remote_agent"]
    assert joined and joined[0]["card"] == "signature verified"
    replies = [r for r in records if r.get("envelope", {}).get("kind") == "reply"
               and r["envelope"]["sender"] == "shouter"]
    assert replies, "the remote agent's answers pass the gate as shouter's replies"


async def test_reply_carries_the_remote_origin(home: MeshHome) -> None:
    async with remote_agent(None) as url:
        home.add_agent("shouter", a2a={"url": url})
        async with background_hub(home) as running:
            await remote_ready(running, "shouter")
            async with connect("caller", credential=home.credential_path("caller"),
                               hub=running.url) as mesh:
                seen: list[dict[str, Any]] = []
                conn = mesh.connection
                original = conn._on_deliver

                def spy(frame: dict[str, Any]) -> None:
                    seen.append(frame["env"])
                    original(frame)

                conn._on_deliver = spy  # type: ignore[method-assign]
                assert await mesh.call("shouter", "shout", "x") == "X"
            labels = seen[-1]["labels"]
            assert labels["provenance"] == [f"a2a:{url}"] and labels["integrity"] == "untrusted"
            assert "unsigned" in running.remotes.status["shouter"]


async def test_badly_signed_card_is_refused(home: MeshHome) -> None:
    signer, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with remote_agent(signer) as url:
        home.add_agent("shouter", a2a={"url": url, "card_key": pem(other)})
        async with background_hub(home) as running:
            await wait_until(lambda: "shouter" in running.remotes.status, timeout=10)
            assert "unavailable" in running.remotes.status["shouter"]
            assert "signature" in running.remotes.status["shouter"].lower()
            assert running.hub.registry.session("shouter") is None


async def test_the_remote_agent_is_called_in_the_callers_trace(home: MeshHome) -> None:
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    trace_id = 0x1F * (16 ** 30) + 0xAB
    caller_span = NonRecordingSpan(SpanContext(trace_id, 0xC0FFEE, is_remote=True,
                                               trace_flags=TraceFlags(1)))
    async with remote_agent(None) as url:
        home.add_agent("shouter", a2a={"url": url})
        async with background_hub(home) as running:
            await remote_ready(running, "shouter")
            async with connect("caller", credential=home.credential_path("caller"),
                               hub=running.url) as mesh:
                SEEN.clear()
                token = context.attach(trace.set_span_in_context(caller_span))
                try:
                    assert await mesh.call("shouter", "shout", "traced") == "TRACED"
                finally:
                    context.detach(token)
    assert SEEN and all(h.split("-")[1] == f"{trace_id:032x}" for h in SEEN), SEEN
