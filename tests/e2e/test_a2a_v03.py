"""A2A 0.3 clients find and call mesh agents: the official a2a-sdk 0.3 client, installed in an
environment of its own (it cannot live beside a2a-sdk 1.x), resolves the cards the hub serves
and sends a message through the compat layer.

The environment is built once under `.cache/a2a-sdk-0.3` (a few seconds from the package
index); the test is skipped, saying why, only when the package cannot be installed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import venv
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, SkillContext
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import make_home

ROOT = Path(__file__).resolve().parents[2]
ENV = ROOT / ".cache" / "a2a-sdk-0.3"
CLIENT = Path(__file__).with_name("a2a_v03_client.py")
VERSION = "0.3.26"


@pytest.fixture(scope="session")
def python03() -> Path:
    """The python of an environment holding a2a-sdk 0.3 (built on first use)."""
    python = ENV / "bin" / "python"
    marker = ENV / f"a2a-sdk-{VERSION}"
    if not marker.exists():
        venv.create(ENV, with_pip=True, clear=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                               f"a2a-sdk=={VERSION}"], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            pytest.skip(f"a2a-sdk {VERSION} could not be installed into {ENV}: "
                        f"{done.stderr.strip().splitlines()[-1:]}")
        marker.touch()
    return python


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, RunningHub]]:
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    async with background_hub(home) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

        @worker.skill("echo", input_schema={"type": "object"})
        async def echo(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
            return {"echo": req, "caller": ctx.caller}

        async with worker:
            yield home, running


async def run_client(python: Path, base: str, token: str, skill: str, data: Any
                     ) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        str(python), str(CLIENT), base, token, skill, json.dumps(data),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out)
    return result


async def test_an_a2a_03_client_resolves_the_card_and_calls_through_the_gate(
        python03: Path, mesh: tuple[MeshHome, RunningHub]) -> None:
    _, running = mesh
    base = f"http://127.0.0.1:{running.port}/a2a/worker"
    result = await run_client(python03, base, issue_token(running.hub.key, "alice"),
                              "echo", {"topic": "agent meshes"})
    card = result["card"]
    assert card["url"] == base and card["protocolVersion"] == "0.3"
    assert card["name"] == "worker" and card["skills"] == ["echo"]
    [task] = result["events"]
    assert task["status"]["state"] == "completed"
    [artifact] = task["artifacts"]
    assert artifact["parts"][0]["data"] == {"echo": {"topic": "agent meshes"},
                                            "caller": "alice"}


async def test_an_a2a_03_client_is_refused_by_the_gate_like_any_other(
        python03: Path, mesh: tuple[MeshHome, RunningHub]) -> None:
    """The worker holds no grant to call itself: the 0.3 path is the same gate."""
    _, running = mesh
    base = f"http://127.0.0.1:{running.port}/a2a/worker"
    process = await asyncio.create_subprocess_exec(
        str(python03), str(CLIENT), base, issue_token(running.hub.key, "worker"), "echo", "{}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0
    assert "default deny" in err.decode()


async def test_the_served_cards_validate_as_03_cards(
        python03: Path, mesh: tuple[MeshHome, RunningHub]) -> None:
    """Both the agent's and the hub's card parse with the 0.3 card model, 1.0 fields kept."""
    _, running = mesh
    check = ("import json, sys; from a2a.types import AgentCard; "
             "c = AgentCard.model_validate(json.load(sys.stdin)); "
             "print(c.url, c.protocol_version)")
    async with httpx.AsyncClient() as http:
        for path in ("/a2a/worker/.well-known/agent-card.json", "/.well-known/agent-card.json"):
            served = (await http.get(f"http://127.0.0.1:{running.port}{path}")).json()
            assert [i["protocolVersion"] for i in served["supportedInterfaces"]][:2] == \
                ["1.0", "1.0"]  # 1.0 clients still pick a 1.0 interface first
            done = subprocess.run([str(python03), "-c", check], input=json.dumps(served),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr[-2000:]
            url, version = done.stdout.split()
            assert version == "0.3" and url.startswith(f"http://127.0.0.1:{running.port}/")


def test_sys_executable_is_not_the_03_environment(python03: Path) -> None:
    """The 0.3 client really runs elsewhere: a2a-sdk 1.x here, 0.3 there."""
    here = subprocess.run([sys.executable, "-c", "import a2a, importlib.metadata as m; "
                           "print(m.version('a2a-sdk'))"], capture_output=True, text=True)
    there = subprocess.run([str(python03), "-c", "import importlib.metadata as m; "
                            "print(m.version('a2a-sdk'))"], capture_output=True, text=True)
    assert here.stdout.split()[0].startswith("1.") and there.stdout.split()[0] == VERSION
