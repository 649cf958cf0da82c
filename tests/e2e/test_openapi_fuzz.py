"""The hub's HTTP surface driven from its own OpenAPI description (`/openapi.json`) by
schemathesis: generated requests, valid and invalid, with and without credentials, against a
real hub process with a real agent behind it. No answer may be a server error, and the agent is
still served afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from interlink.edges.openapi import SPEC
from interlink.home import MeshHome
from interlink.identity import ADMIN_AUDIENCE, issue_token
from interlink.server import HubProcess

from ..helpers import env_python, make_home

schema = schemathesis.openapi.from_dict(SPEC)

WORKER = """
import asyncio, sys
from interlink import Agent
worker = Agent("worker", credential=sys.argv[1], hub=sys.argv[2])

@worker.skill("echo")
async def echo(ctx, req):
    return req

asyncio.run(worker.serve_forever())
"""


class Hub:
    def __init__(self, root: Path) -> None:
        self.home: MeshHome = make_home(root, {"alice": ["worker.*"], "worker": []})
        policy = self.home.load_policy()
        policy.hub.call_timeout_seconds = 3
        self.home.save_policy(policy)
        self.hub = HubProcess(self.home.root)
        self.hub.start()
        self.port = self.hub.port
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log = (root / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(self.home.credential_path("worker")),
             self.hub.url], stdout=log, stderr=subprocess.STDOUT, env=env_python())
        key = self.home.hub_key()
        self.edge_token = issue_token(key, "alice")
        self.admin_token = issue_token(key, "operator", audience=ADMIN_AUDIENCE)

    def headers(self, path: str) -> dict[str, str]:
        token = self.admin_token if path.startswith("/admin") else self.edge_token
        return {"Authorization": f"Bearer {token}"}

    def stop(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(15)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self.hub.stop()
        self.log.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    running = Hub(tmp_path_factory.mktemp("openapi") / "home")
    yield running
    running.stop()
    assert not [p for p in (running.hub.proc, running.worker)
                if p is None or p.returncode not in (0, 130, -15, 143)], \
        "a process crashed"


def test_the_hub_serves_its_description(hub: Hub) -> None:
    import httpx
    assert httpx.get(f"{hub.base}/openapi.json").json() == SPEC


@schema.parametrize()
@settings(max_examples=int(os.environ.get("OPENAPI_EXAMPLES", "25")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error(case: Any, hub: Hub) -> None:
    response = case.call(base_url=hub.base, headers=hub.headers(case.path), timeout=15)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                         response.status_code, response.text[:300])


def test_the_agent_is_still_served_afterwards(hub: Hub) -> None:
    import httpx
    answer = httpx.post(f"{hub.base}/a2a/worker", headers={
        **hub.headers("/a2a"), "A2A-Version": "1.0"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
            "message": {"messageId": "m-ok", "role": "ROLE_USER",
                        "parts": [{"data": {"still": "here"}}]},
            "metadata": {"skill": "echo"}}}, timeout=15)
    assert answer.status_code == 200 and "result" in answer.json(), answer.text
