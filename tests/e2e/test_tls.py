"""TLS at the hub's edges: an agent reaches a hub serving wss:// with a certificate from a
private CA; a wrong CA, an expired certificate and a plaintext client are refused, each with an
error that says which; `interlink init --tls` makes a home whose agents and CLI need nothing
more; a hub listening beyond loopback without TLS says so loudly."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, ConnectionLost, SkillContext, connect
from interlink.home import MeshHome
from interlink.server import background_hub
from interlink.tls import client_context, make_ca, make_hub_cert

from ..helpers import HubProcess, env_python, interlink_cli, make_home


def tls_home(root: Path) -> MeshHome:
    home = make_home(root, {"alice": ["worker.*"], "worker": []})
    home.make_tls(["127.0.0.1", "localhost"])
    return home


def echo_worker(home: MeshHome, url: str, **kwargs: Any) -> Agent:
    worker = Agent("worker", credential=home.credential_path("worker"), hub=url, **kwargs)

    @worker.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return req

    return worker


async def test_agents_talk_over_wss_with_a_private_ca(tmp_path: Path) -> None:
    home = tls_home(tmp_path / "home")
    async with background_hub(home) as running:
        assert running.url.startswith("wss://")
        # the home's CA is found through the credential's home: nothing to pass
        async with echo_worker(home, running.url), \
                connect("alice", credential=home.credential_path("alice"),
                        hub=running.url) as alice:
            assert await alice.call("worker", "echo", {"secret": 1}) == {"secret": 1}
        async with httpx.AsyncClient(verify=client_context(home.tls_ca())) as http:
            health = await http.get(f"https://127.0.0.1:{running.port}/healthz")
            assert health.json()["status"] == "ok"


async def test_a_wrong_ca_an_expired_certificate_and_plaintext_are_refused_clearly(
        tmp_path: Path) -> None:
    home = tls_home(tmp_path / "home")
    other_ca, _ = make_ca(tmp_path / "other")
    async with background_hub(home) as running:
        with pytest.raises(ConnectionLost, match="not trusted"):
            async with connect("alice", credential=home.credential_path("alice"),
                               hub=running.url, tls_ca=other_ca):
                pass
        plain = running.url.replace("wss://", "ws://")
        with pytest.raises(ConnectionLost, match=r"TLS|wss://"):
            async with connect("alice", credential=home.credential_path("alice"), hub=plain):
                pass
        async with connect("alice", credential=home.credential_path("alice"),
                           hub=running.url):
            pass  # and the hub still serves those it should
    # an expired certificate from the right CA
    directory = home.root / "tls"
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    make_hub_cert(directory, directory / "ca.pem", directory / "ca-key.pem",
                  ["127.0.0.1", "localhost"], days=1, not_before=past)
    async with background_hub(home) as running:
        with pytest.raises(ConnectionLost, match="expired"):
            async with connect("alice", credential=home.credential_path("alice"),
                               hub=running.url):
                pass


def test_init_tls_makes_a_home_whose_cli_and_agents_use_wss(tmp_path: Path) -> None:
    root = tmp_path / "home"
    made = subprocess.run([sys.executable, "-m", "interlink", "init", "--home", str(root),
                           "--tls"], capture_output=True, text=True, timeout=60,
                          env=env_python())
    assert made.returncode == 0, made.stderr
    home = MeshHome(root)
    assert home.hub_url().startswith("wss://") and home.tls_ca() is not None
    assert (root / "tls" / "hub-key.pem").stat().st_mode & 0o077 == 0


async def test_the_cli_and_a_hub_process_over_tls(tmp_path: Path) -> None:
    home = tls_home(tmp_path / "home")
    hub = HubProcess(home)
    hub.args = ("--store", f"sqlite:///{home.db_path}")
    await hub.start()
    try:
        url = f"wss://127.0.0.1:{hub.port}/ws"
        async with echo_worker(home, url):
            cli = interlink_cli(home)
            answer = await asyncio.to_thread(cli, "call", "alice", "worker", "echo", '{"x": 1}',
                                             "--hub", url)
            assert answer.returncode == 0, answer.stderr
            assert '"x": 1' in answer.stdout
    finally:
        hub.stop()


def test_a_hub_beyond_loopback_without_tls_says_so(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"alice": []})
    proc = subprocess.Popen([sys.executable, "-m", "interlink", "serve", "--home",
                             str(home.root), "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_python())
    try:
        assert proc.stdout is not None
        seen = ""
        for _ in range(40):
            line = proc.stdout.readline()
            seen += line
            if "PLAINTEXT" in seen or not line:
                break
        assert "PLAINTEXT on 0.0.0.0" in seen, seen
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()
