"""Nothing leaves the hub before what it wrote is durable.

The hub's store groups commits (a write returns before it is committed), so every way out of
the hub waits for `Hub.durable()` first: WebSocket frames and HTTP responses (the app's
`Durable` middleware), in-process edge frames, the audit head file. A spy placed where bytes
reach the server (outside every middleware of the app) records whether the store still held
uncommitted writes at each message; with real traffic of every kind, it must never have.
The same spy on an app without the middleware sees them, so the check can fail."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from interlink import Agent, SkillContext, connect
from interlink import server as server_module
from interlink.edges import http as http_edge
from interlink.edges.local import LocalSocket
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import make_home, wait_until


class Spy:
    """An ASGI wrapper outside the app: sees each message as it reaches the server."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state
        self.messages = 0
        self.early: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def spying(message: Message) -> None:
            if scope["type"] in ("http", "websocket"):
                self.messages += 1
                if self.app.state.hub.store.pending:
                    self.early.append(f"{scope['type']} {scope.get('path')} {message['type']}")
            await send(message)

        await self.app(scope, receive, spying)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> list[Spy]:
    made: list[Spy] = []
    real = server_module.create_app

    def spied(*args: Any, **kwargs: Any) -> Spy:
        spy = Spy(real(*args, **kwargs))
        made.append(spy)
        return spy

    monkeypatch.setattr(server_module, "create_app", spied)
    return made


async def traffic(home: MeshHome, running: RunningHub) -> None:
    """Calls, events, memory and an A2A request: every kind of exit."""
    worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return req

    got: list[Any] = []

    @worker.on_event("news.*")
    async def news(ctx: Any, data: Any) -> None:
        got.append(data)

    async with worker, connect("alice", credential=home.credential_path("alice"),
                               hub=running.url) as alice:
        for i in range(10):
            assert await alice.call("worker", "echo", i) == i
        await asyncio.gather(*(alice.call("worker", "echo", i) for i in range(10)))
        for i in range(5):
            await alice.publish("news.today", {"n": i})
        notes = alice.memory("notes")
        rev = await notes.put("plan", {"v": 1})
        await notes.update("plan", {"v": 2}, expect=rev)
        token = issue_token(running.hub.key, "alice")
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.post(
                f"http://127.0.0.1:{running.port}/a2a/worker",
                headers={"Authorization": f"Bearer {token}", "A2A-Version": "1.0"},
                json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                    "message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()),
                                "parts": [{"data": {"x": 1}}]},
                    "metadata": {"skill": "echo"}}})
            assert reply.status_code == 200 and "result" in reply.json(), reply.text
        await wait_until(lambda: len(got) == 5)


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[MeshHome]:
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    home.grant("alice", publish=["news.*"], memory={"notes": "read-write"})
    home.grant("worker", subscribe=["news.*"])
    yield home


async def test_nothing_leaves_the_hub_before_it_is_durable(
        home: MeshHome, spies: list[Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    local_early: list[str] = []
    real_deliver = LocalSocket._deliver

    async def delivering(self: LocalSocket, frame: Any) -> None:
        await real_deliver(self, frame)  # the barrier is inside; then the frame is handed on
        if self._hub.store.pending:
            local_early.append(str(frame.get("op")))

    monkeypatch.setattr(LocalSocket, "_deliver", delivering)
    async with background_hub(home) as running:
        await traffic(home, running)
    assert spies[0].messages > 50
    assert spies[0].early == []
    assert local_early == []


async def test_without_the_barrier_the_spy_sees_writes_not_yet_durable(
        home: MeshHome, spies: list[Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    class Passthrough(http_edge.Durable):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app(scope, receive, send)

    monkeypatch.setattr(http_edge, "Durable", Passthrough)
    async with background_hub(home) as running:
        await traffic(home, running)
    assert spies[0].early, "the spy must be able to see an answer that ran ahead of the store"
