"""Hostile input at every door of a real hub: the WebSocket protocol, the A2A edge (JSON-RPC and
REST), the ACP edge and the operator endpoint. Each is refused with a 4xx or a refusal naming
its stage — never an internal error, a 5xx, a hang or a dropped connection — and a legitimate
agent is served throughout."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import Agent, SkillContext, connect
from interlink.envelope import new_id, new_traceparent, seal
from interlink.home import MeshHome
from interlink.identity import CredentialFile, issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import RawClient, call_env, make_home

DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, RunningHub]]:
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    async with background_hub(home) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        async with worker:
            yield home, running


async def still_served(home: MeshHome, running: RunningHub) -> None:
    async with connect("alice", credential=home.credential_path("alice"),
                       hub=running.url) as alice:
        assert await alice.call("worker", "echo", {"ok": True}, timeout=5) == {"ok": True}


def envelope(cred: CredentialFile, **fields: Any) -> dict[str, Any]:
    base = {"id": new_id(), "kind": "call", "sender": cred.credential.agent,
            "target": "worker.echo", "conversation": new_id(), "traceparent": new_traceparent(),
            "body": {"message": {"role": "ROLE_USER", "parts": [{"data": 1}]}}}
    base.update(fields)
    return seal(base, cred.private())


async def test_hostile_websocket_frames(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, running = mesh
    cred = CredentialFile.load(home.credential_path("alice"))
    frames: dict[str, Any] = {
        "deeply nested JSON": DEEP,
        "deep inside an envelope": json.dumps(envelope(cred))[:-1] + ',"x":' + DEEP + "}",
        "a number that overflows": json.dumps(envelope(cred)).replace(
            '"data": 1', '"data": 1e400'),
        "NaN": json.dumps(envelope(cred)).replace('"data": 1', '"data": NaN'),
        "binary garbage": bytes(range(256)) * 4,
        "not an object": "[1, 2, 3]",
        "a name with a newline": json.dumps(envelope(cred, sender="alice\n")),
        "an id with a newline": json.dumps(envelope(cred, id="abc\n")),
        "approve of a bad call id": json.dumps(envelope(
            cred, kind="approve", target="x y", body={"decision": "approve"})),
        "delegate with a huge ttl": json.dumps(envelope(
            cred, kind="delegate", target="worker", body={"rights": ["worker.echo"],
                                                          "ttl": 1e300})),
        "delegate with a negative ttl": json.dumps(envelope(
            cred, kind="delegate", target="worker", body={"rights": ["worker.echo"],
                                                          "ttl": -5})),
        "unknown kind": json.dumps(envelope(cred, kind="explode")),
    }
    async with RawClient.open(running.url) as raw:
        assert (await raw.hello(cred))["op"] == "accepted"
        for what, frame in frames.items():
            await raw.send(frame)
            answer = await raw.recv(5)
            while answer.get("op") not in ("accepted", "refused"):
                answer = await raw.recv(5)
            assert answer["op"] == "refused", what
            assert answer["error"]["code"] != "internal", (what, answer)
            assert answer["error"]["reason"], what
        good = call_env(cred, "worker.echo", {"still": "here"})
        await raw.send(good)
        assert (await raw.answer_to(good["id"]))["op"] == "accepted"
    await still_served(home, running)


async def test_a_hello_with_a_deep_card_is_refused(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, running = mesh
    cred = CredentialFile.load(home.credential_path("alice"))
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(60):
        schema = {"type": "object", "properties": {"a": schema}}
    async with RawClient.open(running.url) as raw:
        answer = await raw.hello(cred, body={
            "credential": cred.credential.model_dump(), "challenge": raw.challenge["challenge"],
            "card": {"name": "alice", "skills": [{"id": "s", "input_schema": schema}]}})
        assert answer["op"] == "refused" and answer["error"]["code"] != "internal", answer
    await still_served(home, running)


async def test_hostile_a2a_requests(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, running = mesh
    base = f"http://127.0.0.1:{running.port}/a2a/worker"
    token = issue_token(running.hub.key, "alice")
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"data": 1}]},
        "metadata": {"skill": "echo"}}}
    async with httpx.AsyncClient(timeout=15) as http:
        attempts = [
            ("POST", base, DEEP, {**auth, "A2A-Version": "1.0"}),
            ("POST", base, json.dumps(rpc).replace('"data": 1', '"data": 1e400'),
             {**auth, "A2A-Version": "1.0"}),
            ("POST", base, json.dumps(rpc), {**auth, "A2A-Version": "1.0.x"}),
            ("POST", base, json.dumps(rpc), {**auth, "A2A-Version": "\x7f"}),
            ("POST", base, json.dumps(rpc), {**auth, "A2A-Version": "99999999999999999999.0"}),
            ("GET", f"{base}/tasks/a%20b", None, auth),
            ("GET", f"{base}/tasks/a%00b", None, auth),
            ("GET", f"{base}/tasks/{'x' * 5000}", None, auth),
            ("POST", f"{base}/message:send", json.dumps({
                "message": {"messageId": "m2", "role": "ROLE_USER",
                            "parts": [{"data": {"n": 1}}]}, "metadata": {"skill": "echo"}}
             ).replace('"n": 1', '"n": 1e400'), auth),
            ("POST", f"{base}/message:send", DEEP, auth),
            ("POST", f"{base}/message:send", "[]", auth),
        ]
        for method, url, body, headers in attempts:
            answer = await http.request(method, url, content=body, headers=headers)
            what = (method, url[-40:], (body or "")[:60], headers.get("A2A-Version"))
            assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
            if answer.headers.get("content-type", "").startswith("application/json"):
                data = answer.json()
                if isinstance(data, dict) and "error" in data and isinstance(data["error"],
                                                                             dict):
                    assert data["error"].get("code") != -32603, (what, data)
    await still_served(home, running)


async def test_hostile_acp_requests(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, running = mesh
    url = f"http://127.0.0.1:{running.port}/acp/runs"
    token = issue_token(running.hub.key, "alice")
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    run = {"agent_name": "worker.echo", "mode": "sync",
           "input": [{"role": "user", "parts": [{"content": "1",
                                                 "content_type": "application/json"}]}]}
    bodies = ["[]", "42", "null", DEEP, "not json",
              json.dumps({**run, "session": [1]}), json.dumps({**run, "session_id": {"a": 1}}),
              json.dumps({**run, "input": [{"role": "user", "parts": [
                  {"content": 5, "content_type": "application/json"}]}]}),
              json.dumps({**run, "input": [{"role": "user", "parts": [
                  {"content": "1", "content_type": ["x"]}]}]}),
              json.dumps({**run, "input": [{"role": "user", "parts": [
                  {"content": "1e400", "content_type": "application/json"}]}]}),
              json.dumps({**run, "input": [{"role": "user", "parts": [
                  {"content": DEEP, "content_type": "application/json"}]}]}),
              json.dumps({**run, "input": "x"}), json.dumps({**run, "agent_name": 7})]
    async with httpx.AsyncClient(timeout=15) as http:
        for body in bodies:
            answer = await http.post(url, content=body, headers=headers)
            assert 400 <= answer.status_code < 500, (body[:80], answer.status_code,
                                                     answer.text[:300])
    await still_served(home, running)


async def test_hostile_operator_requests(mesh: tuple[MeshHome, RunningHub]) -> None:
    from interlink.identity import ADMIN_AUDIENCE
    home, running = mesh
    token = issue_token(running.hub.key, "operator", audience=ADMIN_AUDIENCE)
    base = f"http://127.0.0.1:{running.port}/admin/agents"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=15) as http:
        for path, body in (("alice", DEEP), ("alice", "[]"), ("alice", "x" * 20_000),
                           ("Bad%20Name", "{}"), ("nobody", "{}")):
            answer = await http.post(f"{base}/{path}/clear-taint", content=body,
                                     headers=headers)
            assert 400 <= answer.status_code < 500, (path, body[:40], answer.status_code)
    await still_served(home, running)
