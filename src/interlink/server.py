"""Running the hub under uvicorn: in the foreground (`interlink serve`) or in the background of
an asyncio program (the demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import uvicorn
from starlette.applications import Starlette

from .edges.a2a_remote import RemoteAgents
from .edges.http import create_app
from .errors import ConfigError
from .home import MeshHome
from .hub import Hub
from .store import Claim, open_store
from .tls import loopback

log = logging.getLogger("interlink.server")


@dataclass
class RunningHub:
    hub: Hub
    host: str
    port: int
    remotes: RemoteAgents | None = None
    """The remote A2A agents' proxies (started beside the hub, by the HTTP app)."""
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/ws"


GRACEFUL_STOP_SECONDS = 10
"""How long a stopping hub waits for open connections and requests to end (uvicorn's own
default is to wait for ever)."""


def _config(home: MeshHome, host: str | None, port: int | None, log_level: str,
            full_gate: bool = True, claim: Claim | None = None,
            accept_audit_gap: bool = False, store_url: str | None = None,
            tls: tuple[Path, Path] | None = None, standby: bool = False) -> uvicorn.Config:
    policy = home.load_policy()
    host = host or policy.hub.host
    port = policy.hub.port if port is None else port
    tls = tls or home.tls_files(policy)
    if tls is not None:
        for path in tls:
            if not path.exists():
                raise ConfigError(f"the hub's TLS file {path} does not exist (hub.tls in "
                                  "mesh.yaml, or --tls-cert / --tls-key)")
    elif not loopback(host):
        log.warning("PLAINTEXT on %s: this hub listens beyond this machine without TLS, so "
                    "envelopes, tokens and answers cross the network readable by anyone on "
                    "the way; give it a certificate (`interlink init --tls`, hub.tls in "
                    "mesh.yaml, or --tls-cert / --tls-key)", host)
    where = f"{'wss' if tls else 'ws'}://{host}:{port}/ws"
    app = create_app(home, full_gate=full_gate, claim=claim, accept_audit_gap=accept_audit_gap,
                     where=where, store_url=store_url, standby=standby)
    return uvicorn.Config(
        app, host=host, port=port,
        ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None,
        lifespan="on", log_level=log_level if log_level == "debug" else "warning",
        log_config=None, access_log=False,  # the hub logs its own lines (interlink.logs)
        # the gate refuses, with a reason, above the limit
        ws_max_size=4 * policy.hub.max_envelope_bytes,
        ws_ping_interval=10.0, ws_ping_timeout=20.0,
        # agents' frames are small: compression costs more than it saves
        ws_per_message_deflate=False,
        # asked to stop, the hub stops: connections still open after this many seconds (a
        # client that never closes its end) are cut, then the hub seals its audit chain
        timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS)


def serve(home: MeshHome, *, host: str | None = None, port: int | None = None,
          log_level: str = "info", accept_audit_gap: bool = False,
          store_url: str | None = None, tls: tuple[Path, Path] | None = None,
          standby: bool = False) -> None:
    """Run the hub in the foreground. The store is claimed first, so a second hub on the same
    home stops here (StoreClaimed, naming the running one) before it touches anything."""
    policy = home.load_policy()
    where = f"ws://{host or policy.hub.host}:{policy.hub.port if port is None else port}/ws"
    claim = open_store(home.store_url(store_url)).claim(
        f"hub pid {os.getpid()} serving {where}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    try:
        server = uvicorn.Server(_config(home, host, port, log_level, claim=claim,
                                        accept_audit_gap=accept_audit_gap,
                                        store_url=store_url, tls=tls, standby=standby))
        server.run()
        if not server.started:
            raise SystemExit(1)  # uvicorn said why (the port is taken, the audit chain is cut)
    finally:
        claim.release()


@contextlib.asynccontextmanager
async def background_hub(home: MeshHome, *, host: str = "127.0.0.1", port: int = 0,
                         log_level: str = "warning", full_gate: bool = True,
                         store_url: str | None = None) -> AsyncIterator[RunningHub]:
    """Run a hub inside this event loop until the block ends; port 0 picks a free port.
    `full_gate=False` leaves out the label, validate and guard stages (benchmarks only)."""
    config = _config(home, host, port, log_level, full_gate, store_url=store_url)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the hub stopped while starting")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningHub(hub=hub_of(config), host=host, port=bound,
                         remotes=cast(Starlette, config.app).state.remotes,
                         tls=config.ssl_certfile is not None)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task



def hub_of(config: uvicorn.Config) -> Hub:
    """The hub inside the app a config runs (made by `create_app`)."""
    app = cast(Starlette, config.app)
    hub: Hub = app.state.hub
    return hub


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HubProcess:
    """`interlink serve` as a process of its own (tests, benchmarks and reliability runs that
    kill it): `start()` returns once it listens, `kill()` is SIGKILL, `stop()` SIGINT."""

    def __init__(self, home: str | os.PathLike[str], port: int | None = None,
                 log: Path | None = None, args: tuple[str, ...] = ()) -> None:
        self.root = Path(home)
        self.port = port or free_port()
        self.log = log or self.root / f"hub-{self.port}.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "interlink", "serve", "--home", str(self.root),
                 "--port", str(self.port), *self.args], stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return  # uvicorn binds only once the hub's start-up is done
            time.sleep(0.05)
        raise RuntimeError("hub did not start in time")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
