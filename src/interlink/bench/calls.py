"""Calls: what a mesh call costs against calling the other agent directly over A2A.

Every server runs in its own process: the hub (`interlink serve`), the callee mesh agent, and
the baseline, a plain a2a-sdk server (in-memory task store) answering each message with a
completed task holding the input as its artifact — the same work the A2A edge does. The
callers run here, one path after the other within each round, rounds interleaved so that a
noisy neighbour on the machine hits every path alike:

- mesh: an SDK agent calls the `echo` agent through the hub (the full gate, committed, audited)
- direct: an a2a-sdk client sends the message to the a2a-sdk server (non-streaming)
- edge: the same a2a-sdk client sends it to the hub's `/a2a/echo` with a bearer token
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest
from google.protobuf.json_format import ParseDict

from ..home import MeshHome
from ..identity import issue_token
from ..sdk import connect
from ..server import HubProcess, free_port
from . import Figure, Peer, Samples, latency, rate

SMALL = {"text": "x" * 100}
LARGE = {"text": "x" * 65536}
MESH = "mesh call (full gate)"
EDGE = "A2A client via /a2a/{agent}"
DIRECT = "direct a2a-sdk call"

Call = Callable[[dict[str, Any]], Awaitable[Any]]


def a2a_request(data: dict[str, Any], **metadata: str) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex)
    message.parts.append(ParseDict({"data": data}, Part()))
    request = SendMessageRequest(message=message)
    if metadata:
        request.metadata.update(metadata)
    return request


def a2a_caller(client: Any, **metadata: str) -> Call:
    async def call(data: dict[str, Any]) -> Any:
        last = None
        async for event in client.send_message(a2a_request(data, **metadata)):
            last = event
        if last is None:
            raise RuntimeError("the A2A call returned nothing")
        return last
    return call


async def round_trips(paths: dict[str, Call], payload: dict[str, Any], calls: int,
                      rounds: int) -> dict[str, Samples]:
    samples = {name: Samples() for name in paths}
    for call in paths.values():  # warm up every path (connections, caches, JIT-less Python)
        for _ in range(20):
            await call(payload)
    for _ in range(rounds):
        for name, call in paths.items():
            for _ in range(max(1, calls // rounds)):
                started = time.perf_counter()
                await call(payload)
                samples[name].values.append(time.perf_counter() - started)
    return samples


async def throughputs(paths: dict[str, Call], payload: dict[str, Any], calls: int,
                      in_flight: int, rounds: int) -> dict[str, float]:
    totals = {name: 0.0 for name in paths}
    for _ in range(rounds):
        for name, call in paths.items():
            gate = asyncio.Semaphore(in_flight)

            async def one(call: Call = call, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await call(payload)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(max(1, calls // rounds))))
            totals[name] += time.perf_counter() - started
    return {name: calls / seconds for name, seconds in totals.items()}


async def echo_mesh(root: Path, stack: contextlib.ExitStack, log: IO[bytes],
                    hub_src: Path | None = None) -> tuple[MeshHome, HubProcess]:
    """A mesh home at `root` with `caller` (may call `echo.echo`) and `echo`, its hub in a
    process of its own and the `echo` agent in another, both stopped when `stack` closes.
    `hub_src`: the hub process runs the interlink of that source folder (another build)."""
    home = MeshHome(root)
    home.init(port=free_port())
    home.add_agent("caller", calls=["echo.echo"])
    home.add_agent("echo")
    hub = HubProcess(home.root, port=home.load_policy().hub.port)
    saved = os.environ.get("PYTHONPATH")
    if hub_src is not None:
        os.environ["PYTHONPATH"] = str(hub_src)
    try:
        await asyncio.to_thread(hub.start)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    stack.callback(hub.stop)
    callee = await asyncio.to_thread(Peer, "echo-agent", str(home.credential_path("echo")),
                                     hub.url, log=log)
    stack.callback(callee.stop)
    return home, hub


async def run(work: Path, quick: bool = False, progress: Callable[[str], None] = print
              ) -> list[Figure]:
    calls, rounds, flood = (200, 4, 400) if quick else (2000, 10, 4000)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context((work / "calls-peers.log").open("wb"))
        home, hub = await echo_mesh(work / "calls", stack, log)
        port = free_port()
        baseline = await asyncio.to_thread(Peer, "a2a-echo", str(port), log=log)
        stack.callback(baseline.stop)
        token = issue_token(home.hub_key(), "caller")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with connect("caller", credential=home.credential_path("caller"),
                           hub=hub.url) as mesh, \
                httpx.AsyncClient(timeout=60, limits=limits) as plain, \
                httpx.AsyncClient(timeout=60, limits=limits,
                                  headers={"Authorization": f"Bearer {token}"}) as authed:
            direct = await create_client(f"http://127.0.0.1:{port}", client_config=ClientConfig(
                httpx_client=plain, streaming=False))
            edge = await create_client(f"http://127.0.0.1:{hub.port}/a2a/echo",
                                       client_config=ClientConfig(httpx_client=authed,
                                                                  streaming=False))

            async def mesh_call(data: dict[str, Any]) -> Any:
                return await mesh.call("echo", "echo", data)

            paths: dict[str, Call] = {MESH: mesh_call, EDGE: a2a_caller(edge),
                                      DIRECT: a2a_caller(direct),
                                      "direct (bare Message reply)":
                                          a2a_caller(direct, reply="message")}
            figures: list[Figure] = []
            for label, payload in (("100 B", SMALL), ("64 KiB", LARGE)):
                progress(f"calls: {calls} sequential round trips per path, {label} payload")
                got = await round_trips(paths, payload, calls, rounds)
                figures += [
                    latency("calls", f"round trip {label}: {MESH}", got[MESH], DIRECT,
                            got[DIRECT], target=0.5),
                    latency("calls", f"round trip {label}: {EDGE}", got[EDGE], DIRECT,
                            got[DIRECT], target=1.0),
                    latency("calls", f"round trip {label}: {MESH}", got[MESH],
                            "direct, bare Message reply", got["direct (bare Message reply)"],
                            note="the cheapest A2A answer: no task")]
            progress(f"calls: throughput, {flood} calls per path, 16 in flight")
            per_s = await throughputs({MESH: paths[MESH], EDGE: paths[EDGE],
                                       DIRECT: paths[DIRECT]}, SMALL, flood, 16, 2)
            figures += [rate("calls", f"throughput 100 B x16: {MESH}", per_s[MESH], DIRECT,
                             per_s[DIRECT], target=2.0),
                        rate("calls", f"throughput 100 B x16: {EDGE}", per_s[EDGE], DIRECT,
                             per_s[DIRECT], target=1.0)]
            return figures
    raise AssertionError("unreachable")
