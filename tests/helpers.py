"""Test helpers: mesh homes, hubs (in-process and as real processes), raw WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from interlink import server
from interlink.envelope import HUB, call_body, new_id, new_traceparent, seal
from interlink.home import MeshHome
from interlink.identity import CredentialFile
from interlink.server import free_port
from interlink.services.audit import read_head
from interlink.store import open_store


class NatsServer:
    """A JetStream server of the tests' own: Debian's `nats-server` on a free port with its own
    storage directory (`.ci/run` installs the package). `stop()` kills it (SIGKILL with
    `kill=True`); `start()` brings it back on the same port and storage."""

    def __init__(self, storage: Path, *, tls: tuple[Path, Path] | None = None,
                 cluster: tuple[str, int, list[int]] | None = None) -> None:
        """`cluster`: (this server's name, its route port, every route port of the cluster)."""
        binary = shutil.which("nats-server") or next(
            (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server")
             if Path(p).exists()), None)
        if binary is None:
            raise RuntimeError("nats-server is not installed: `apt-get install nats-server` "
                               "(the JetStream engine's tests start their own)")
        self.binary = binary
        self.storage = storage
        self.port = free_port()
        self.tls = tls
        self.url = f"{'tls' if tls else 'nats'}://127.0.0.1:{self.port}"
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        tls = ["--tls", "--tlscert", str(self.tls[0]), "--tlskey", str(self.tls[1])] \
            if self.tls else []
        if self.cluster is not None:
            name, route, routes = self.cluster
            tls += ["--server_name", name, "--cluster_name", "interlink-test",
                    "--cluster", f"nats://127.0.0.1:{route}",
                    "--routes", ",".join(f"nats://127.0.0.1:{r}" for r in routes if r != route)]
        self.proc = subprocess.Popen([self.binary, "-js", "-sd", str(self.storage), "-a",
                                      "127.0.0.1", "-p", str(self.port), *tls],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop(kill=True)
                    raise RuntimeError(f"nats-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)


def nats_cluster(root: Path, size: int = 3) -> list[NatsServer]:
    """`size` JetStream servers routed into one cluster on loopback, each with its storage."""
    routes = [free_port() for _ in range(size)]
    return [NatsServer(root / f"n{i}", cluster=(f"n{i}", routes[i], routes)).start()
            for i in range(size)]


def make_home(root: Path, agents: dict[str, list[str]], port: int | None = None) -> MeshHome:
    """A fresh mesh home with these agents and their call grants (and its hub's port in
    mesh.yaml, for tests where the CLI must find the running hub)."""
    home = MeshHome(root)
    home.init(port=port)
    for name, calls in agents.items():
        home.add_agent(name, calls=calls)
    return home


class HubProcess(server.HubProcess):
    """`interlink serve` as a real process, which tests may SIGKILL and restart."""

    def __init__(self, home: MeshHome, port: int | None = None) -> None:
        super().__init__(home.root, port)
        self.home = home

    async def start(self, timeout: float = 20.0) -> None:  # type: ignore[override]
        await asyncio.to_thread(super().start, timeout)


class RawClient:
    """A WebSocket client that speaks the protocol by hand, for feeding the hub bad input."""

    def __init__(self, ws: ClientConnection, challenge: dict[str, Any]) -> None:
        self.ws = ws
        self.challenge = challenge

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[RawClient]:
        async with ws_connect(url, max_size=None) as ws:
            challenge = json.loads(await ws.recv())
            yield cls(ws, challenge)

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def answer_to(self, env_id: str | None, timeout: float = 5.0) -> dict[str, Any]:
        """The hub's accepted/refused answer for `env_id` (other frames are skipped)."""
        while True:
            frame = await self.recv(timeout)
            if frame.get("op") in ("accepted", "refused") and frame.get("id") == env_id:
                return frame

    async def hello(self, cred: CredentialFile, **overrides: Any) -> dict[str, Any]:
        env = seal({"id": new_id(), "kind": "hello", "sender": cred.credential.agent,
                    "target": HUB, "conversation": new_id(), "traceparent": new_traceparent(),
                    "body": {"credential": cred.credential.model_dump(),
                             "challenge": self.challenge["challenge"],
                             "card": {"name": cred.credential.agent}}, **overrides},
                   cred.private())
        await self.send(env)
        return await self.answer_to(env["id"])


def call_env(cred: CredentialFile, target: str, data: Any = None, **fields: Any
             ) -> dict[str, Any]:
    call_id = fields.pop("id", None) or new_id()
    return seal({"id": call_id, "kind": "call", "sender": cred.credential.agent,
                 "target": target, "conversation": call_id, "traceparent": new_traceparent(),
                 "deadline": time.time() + 10, "body": call_body(data, call_id), **fields},
                cred.private())


async def sealed(home: MeshHome, timeout: float = 10.0) -> None:
    """Until a running hub has sealed every audit record written so far: its signed head
    (beside the store) covers the last record in the store."""
    async def covered() -> bool:
        head = read_head(home.audit_head_path)
        records = await audit_records(home)
        return bool(head and records and head.get("upto") == records[-1]["n"])
    await wait_until(covered, timeout=timeout, interval=0.05)


async def audit_records(home: MeshHome) -> list[dict[str, Any]]:
    async with open_store(f"sqlite:///{home.db_path}") as store:
        log = await store.log("audit")
        return [json.loads(m.data) for m in await log.read(1, subject="audit.record",
                                                            limit=100_000)]


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


async def applied(running: Any) -> None:
    """Apply an edited mesh.yaml to an in-process hub now, as its watcher would within a
    quarter second (instead of sleeping past it), and let what the change set off start."""
    running.hub.policy.reload_if_changed()
    await asyncio.sleep(0)


def env_python() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def interlink_cli(home: MeshHome) -> Any:
    """Run the `interlink` command as a user would, in a subprocess, against `home`."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "interlink", *args, "--home",
                               str(home.root)], capture_output=True, text=True, timeout=60,
                              env={**env_python(), "COLUMNS": "200"})
    return run
