"""The SDK over the in-process transport: a hub in this event loop, no uvicorn, no sockets.
The same Agent, Mesh and Connection code as over a WebSocket, against the same gate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, ConnectionLost, GateDenied, SkillContext, connect
from interlink.edges.local import LocalSocket, local_transport
from interlink.home import MeshHome
from interlink.hub import Hub

from ..helpers import make_home


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, Hub]]:
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": [], "mallory": []})
    async with Hub(home) as running:
        yield home, running


async def test_an_agent_and_a_client_talk_through_an_in_process_hub(
        hub: tuple[MeshHome, Hub]) -> None:
    home, running = hub
    worker = Agent("worker", credential=home.credential_path("worker"),
                   transport=local_transport(running, "test:worker"))

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return {"echo": req, "caller": ctx.caller}

    async with worker, connect("alice", credential=home.credential_path("alice"),
                               transport=local_transport(running, "test:alice")) as alice:
        assert await alice.call("worker", "echo", [1, 2]) == {"echo": [1, 2], "caller": "alice"}
        async with connect("mallory", credential=home.credential_path("mallory"),
                           transport=local_transport(running, "test:mallory")) as mallory:
            with pytest.raises(GateDenied) as refused:
                await mallory.call("worker", "echo", 1)
            assert refused.value.code == "not_granted"


async def test_a_closed_in_process_socket_speaks_the_sdks_error(
        hub: tuple[MeshHome, Hub]) -> None:
    _, running = hub
    socket = LocalSocket(running, "test:raw")
    assert '"op":"challenge"' in (await socket.recv()).replace(" ", "")
    await socket.aclose()
    assert socket.close_code == 1000
    with pytest.raises(ConnectionLost):
        await socket.send("{}")
    with pytest.raises(ConnectionLost):
        await socket.recv()
    assert [frame async for frame in socket] == []


async def test_a_slow_live_reader_holds_a_bounded_backlog_and_misses_nothing(
        tmp_path: Path) -> None:
    """A live subscription's reader falls far behind its publisher: the SDK holds at most its
    backlog, pauses the hub's push, and resumes from the log once the reader has caught up —
    every event once, in order."""
    home = make_home(tmp_path / "home", {"pub": [], "sub": []})
    home.grant("pub", publish=["news.>"])
    home.grant("sub", subscribe=["news.>"])
    async with Hub(home) as running, \
            connect("pub", credential=home.credential_path("pub"),
                    transport=local_transport(running, "test:pub")) as pub, \
            connect("sub", credential=home.credential_path("sub"),
                    transport=local_transport(running, "test:sub")) as sub:
        sub.connection.live_backlog = 8
        stream = await sub.subscribe("news.>")
        for n in range(60):  # nobody reads meanwhile
            await pub.publish("news.flash", {"n": n})
        assert stream.queue.qsize() <= 8
        seen = []
        for _ in range(60):
            event = await stream.get(10)
            seen.append(event.data["n"])
            assert stream.queue.qsize() <= 8
        assert seen == list(range(60))
        with pytest.raises(TimeoutError):
            await stream.get(0.3)  # and nothing twice


async def test_a_slow_watch_reader_holds_a_bounded_backlog_and_misses_no_revision(
        tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"writer": [], "reader": []})
    home.grant("writer", memory={"notes": "read-write"})
    home.grant("reader", memory={"notes": "read"})
    async with Hub(home) as running, \
            connect("writer", credential=home.credential_path("writer"),
                    transport=local_transport(running, "test:writer")) as writer, \
            connect("reader", credential=home.credential_path("reader"),
                    transport=local_transport(running, "test:reader")) as reader:
        reader.connection.live_backlog = 6
        changes = await reader.memory("notes").watch("")
        written = [await writer.memory("notes").put(f"k{n}", n) for n in range(40)]
        assert changes.queue.qsize() <= 6
        seen = [(await changes.get(10)).revision for _ in range(40)]
        assert seen == written
