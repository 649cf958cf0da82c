"""Mesh agents served over A2A 1.0, exercised with the official a2a-sdk client (and raw
JSON-RPC for 0.3 clients and version errors) against a real hub."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.signing import create_signature_verifier
from google.protobuf.json_format import MessageToDict

from interlink import Agent, InputRequired, SkillContext
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import RunningHub, background_hub

from ..helpers import audit_records, make_home


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, RunningHub, Agent]]:
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "bob": ["worker.*"],
                                         "mallory": [], "worker": []})
    async with background_hub(home) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)
        release = asyncio.Event()

        @worker.skill("echo", input_schema={"type": "object"})
        async def echo(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
            await ctx.progress("thinking")
            return {"echo": req, "caller": ctx.caller, "trace": ctx.traceparent}

        @worker.skill("chunks")
        async def chunks(ctx: SkillContext, req: Any) -> str:
            for i in range(3):
                await ctx.artifact(text=f"part {i}", name="story", append=i > 0,
                                   last_chunk=i == 2)
            return "done"

        @worker.skill("ask")
        async def ask(ctx: SkillContext, req: Any) -> dict[str, Any]:
            if not ctx.message.get("taskId") or req == "start":
                raise InputRequired("which colour?")
            return {"colour": req}

        @worker.skill("slow")
        async def slow(ctx: SkillContext, req: Any) -> str:
            await release.wait()
            return "finally"

        @worker.skill("rich")
        async def rich(ctx: SkillContext, req: Any) -> Any:
            how = req if isinstance(req, str) else "artifact"
            if how == "decline":
                return {"$a2a": {"parts": [{"text": "not my job"}], "reply": "status",
                                 "state": "rejected"}}
            return {"$a2a": {"parts": [{"url": "https://example.com/report.pdf",
                                        "mediaType": "application/pdf",
                                        "filename": "report.pdf"}], "reply": how}}

        @worker.skill("broken")
        async def broken(ctx: SkillContext, req: Any) -> None:
            raise RuntimeError("the worker broke")

        async with worker:
            yield home, running, worker
            release.set()


def base(running: RunningHub) -> str:
    return f"http://127.0.0.1:{running.port}"


def http_for(home: MeshHome, running: RunningHub, agent: str) -> httpx.AsyncClient:
    token = issue_token(running.hub.key, agent)
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)


def message(data: Any, skill: str, **fields: Any) -> SendMessageRequest:
    part = Part(text=data) if isinstance(data, str) else None
    msg = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()),
                  parts=[part] if part else [], **fields)
    if part is None:
        from google.protobuf.json_format import ParseDict
        msg.parts.append(ParseDict({"data": data}, Part()))
    request = SendMessageRequest(message=msg)
    request.metadata.update({"skill": skill})
    return request


async def collect(client: Any, request: SendMessageRequest) -> list[dict[str, Any]]:
    return [MessageToDict(event) async for event in client.send_message(request)]


async def test_card_is_signed_by_the_hub_and_carries_schemas(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    _, running, _ = mesh
    async with httpx.AsyncClient() as http:  # cards are public
        resolver = A2ACardResolver(http, f"{base(running)}/a2a/worker")
        verifier = create_signature_verifier(lambda kid, jku: running.hub.key.public,
                                             ["EdDSA"])
        card = await resolver.get_agent_card(signature_verifier=verifier)
        assert card.name == "worker"
        assert {s.id for s in card.skills} >= {"echo", "chunks", "ask", "slow"}
        [ext] = card.capabilities.extensions
        params = MessageToDict(ext.params)
        assert params["skills"]["echo"]["input"] == {"type": "object"}
        assert "bearer" in card.security_schemes
        card.description = "tampered"
        with pytest.raises(Exception, match="signature"):
            verifier(card)
        root = (await http.get(f"{base(running)}/.well-known/agent-card.json")).json()
        assert "worker.echo" in {s["id"] for s in root["skills"]}
        trailing = await http.get(f"{base(running)}/a2a/worker/.well-known/agent-card.json")
        assert trailing.headers.get("cache-control") and trailing.headers.get("etag")
        assert trailing.headers.get("last-modified", "").endswith(" GMT")


async def test_send_stream_get_and_list_through_the_gate(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        client = await create_client(f"{base(running)}/a2a/worker",
                                     client_config=ClientConfig(streaming=True, httpx_client=http))
        events = await collect(client, message({"n": 1}, "echo"))
        states = [e["statusUpdate"]["status"]["state"] for e in events if "statusUpdate" in e]
        assert states[0] == "TASK_STATE_WORKING" and states[-1] == "TASK_STATE_COMPLETED"
        assert any(e.get("statusUpdate", {}).get("status", {}).get("message", {})
                   .get("parts", [{}])[0].get("text") == "thinking" for e in events)
        [result] = [e["artifactUpdate"]["artifact"] for e in events if "artifactUpdate" in e]
        assert result["parts"][0]["data"]["echo"] == {"n": 1}
        assert result["parts"][0]["data"]["caller"] == "alice"  # the token's identity
        task_id = events[0]["task"]["id"]
        task = await client.get_task(GetTaskRequest(id=task_id))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        listed = await client.list_tasks(ListTasksRequest())
        assert task_id in {t.id for t in listed.tasks}
        blocking = await create_client(f"{base(running)}/a2a/worker", client_config=ClientConfig(
            streaming=False, httpx_client=http))
        [final] = await collect(blocking, message({"n": 2}, "echo"))
        assert final["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    records = await audit_records(home)
    assert any(r.get("envelope", {}).get("sender") == "alice"
               and r["envelope"].get("target") == "worker.echo" for r in records)


async def test_rest_binding_and_streamed_artifacts(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        client = await create_client(f"{base(running)}/a2a/worker", client_config=ClientConfig(
            streaming=True, httpx_client=http, supported_protocol_bindings=["HTTP+JSON"]))
        events = await collect(client, message("go", "chunks"))
        artifacts = [e["artifactUpdate"] for e in events if "artifactUpdate" in e]
        story = [a for a in artifacts if a["artifact"].get("name") == "story"]
        assert [a["artifact"]["parts"][0]["text"] for a in story] == ["part 0", "part 1",
                                                                      "part 2"]
        assert story[-1].get("lastChunk") is True


async def test_input_required_then_continue_the_task(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        client = await create_client(f"{base(running)}/a2a/worker",
                                     client_config=ClientConfig(streaming=False, httpx_client=http))
        [first] = await collect(client, message("start", "ask"))
        task = first["task"]
        assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        assert task["status"]["message"]["parts"][0]["text"] == "which colour?"
        [second] = await collect(client, message("blue", "ask", task_id=task["id"],
                                                 context_id=task["contextId"]))
        assert second["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        assert second["task"]["artifacts"][0]["parts"][0]["data"] == {"colour": "blue"}


async def test_cancel_a_running_task(mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        client = await create_client(f"{base(running)}/a2a/worker",
                                     client_config=ClientConfig(streaming=True, httpx_client=http))
        stream = client.send_message(message("x", "slow"))
        first = MessageToDict(await anext(stream))
        task_id = first["task"]["id"]
        canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await stream.aclose()


async def test_tasks_belong_to_their_caller(mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    """bob cannot get, list, subscribe to or cancel alice's task."""
    home, running, _ = mesh
    async with http_for(home, running, "alice") as alice_http, \
            http_for(home, running, "bob") as bob_http:
        url = f"{base(running)}/a2a/worker"
        alice = await create_client(url, client_config=ClientConfig(streaming=True,
                                                                    httpx_client=alice_http))
        bob = await create_client(url, client_config=ClientConfig(streaming=True,
                                                                  httpx_client=bob_http))
        stream = alice.send_message(message("x", "slow"))
        task_id = MessageToDict(await anext(stream))["task"]["id"]
        with pytest.raises(Exception, match=r"(?i)not found"):
            await bob.get_task(GetTaskRequest(id=task_id))
        assert task_id not in {t.id for t in (await bob.list_tasks(ListTasksRequest())).tasks}
        with pytest.raises(Exception, match=r"(?i)not found"):
            async for _ in bob.subscribe(SubscribeToTaskRequest(id=task_id)):
                pass
        with pytest.raises(Exception, match=r"(?i)not found"):
            await bob.cancel_task(CancelTaskRequest(id=task_id))
        again = await alice.get_task(GetTaskRequest(id=task_id))
        assert again.status.state == TaskState.TASK_STATE_WORKING  # untouched by bob
        resubscribed = alice.subscribe(SubscribeToTaskRequest(id=task_id))
        assert MessageToDict(await anext(resubscribed))["task"]["id"] == task_id
        await resubscribed.aclose()
        await stream.aclose()


async def test_gate_refusals_are_a2a_errors_with_detail(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    url = f"{base(running)}/a2a/worker"
    async with http_for(home, running, "mallory") as http:  # enrolled, granted nothing
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
            "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]},
            "metadata": {"skill": "echo"}}}
        answer = (await http.post(url, json=body, headers={"A2A-Version": "1.0"})).json()
        error = answer["error"]
        assert "not_granted" in error["message"]
        assert "default deny" in str(error.get("data"))
    async with httpx.AsyncClient() as anonymous:
        refused = await anonymous.post(url, json=body, headers={"A2A-Version": "1.0"})
        assert refused.status_code == 401 and "interlink token" in refused.json()["how"]
        forged = await anonymous.post(url, json=body, headers={
            "A2A-Version": "1.0", "Authorization": "Bearer not.a.token"})
        assert forged.status_code == 401
    records = await audit_records(home)
    assert any(r.get("code") == "not_granted" and r["envelope"]["sender"] == "mallory"
               for r in records)


async def test_failed_skill_is_a_failed_task(mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        client = await create_client(f"{base(running)}/a2a/worker",
                                     client_config=ClientConfig(streaming=False, httpx_client=http))
        [final] = await collect(client, message("x", "broken"))
        assert final["task"]["status"]["state"] == "TASK_STATE_FAILED"
        assert "the worker broke" in str(final["task"]["status"]["message"])


async def test_v03_clients_versions_and_traceparent(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    url = f"{base(running)}/a2a/worker/"  # trailing slash accepted
    async with http_for(home, running, "alice") as http:
        old = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "message/send",
                                         "params": {"message": {
                                             "messageId": "m03", "role": "user", "kind": "message",
                                             "parts": [{"kind": "data", "data": {"v": "0.3"}}]},
                                             "metadata": {"skill": "echo"}}})
        result = old.json()["result"]
        assert result["kind"] == "task" and result["status"]["state"] == "completed"
        unknown = await http.post(url, headers={"A2A-Version": "9.9"}, json={
            "jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": "x"}})
        assert unknown.json()["error"]["code"] == -32009
        parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        traced = await http.post(url, headers={"A2A-Version": "1.0", "traceparent": parent},
                                 json={"jsonrpc": "2.0", "id": 3, "method": "SendMessage",
                                       "params": {"message": {"messageId": "mt",
                                                              "role": "ROLE_USER",
                                                              "parts": [{"data": {}}]},
                                                  "metadata": {"skill": "echo"}}})
        assert traced.headers["traceparent"].split("-")[1] == "ab" * 16
        task = traced.json()["result"]["task"]
        seen = task["artifacts"][0]["parts"][0]["data"]["trace"]
        assert seen.split("-")[1] == "ab" * 16  # the skill ran in the caller's trace


async def test_unknown_agent_and_ambiguous_skill(mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        missing = await http.get(f"{base(running)}/a2a/nobody/.well-known/agent-card.json")
        assert missing.status_code == 404
        answer = (await http.post(f"{base(running)}/a2a/worker", headers={"A2A-Version": "1.0"},
                                  json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                                        "params": {"message": {
                                            "messageId": "m", "role": "ROLE_USER",
                                            "parts": [{"text": "which?"}]}}})).json()
        assert answer["error"]["code"] == -32602 and "metadata.skill" in answer["error"]["message"]


async def test_skills_can_reply_with_files_messages_or_reject(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        client = await create_client(f"{base(running)}/a2a/worker",
                                     client_config=ClientConfig(streaming=False, httpx_client=http))
        [task] = await collect(client, message("artifact", "rich"))
        part = task["task"]["artifacts"][0]["parts"][0]
        assert part["url"] == "https://example.com/report.pdf" and part["filename"] == "report.pdf"
        [reply] = await collect(client, message("message", "rich"))
        assert "message" in reply and reply["message"]["parts"][0]["filename"] == "report.pdf"
        [declined] = await collect(client, message("decline", "rich"))
        assert declined["task"]["status"]["state"] == "TASK_STATE_REJECTED"
        assert declined["task"]["status"]["message"]["parts"][0]["text"] == "not my job"


async def test_non_json_bodies_are_refused_with_content_type_errors(
        mesh: tuple[MeshHome, RunningHub, Agent]) -> None:
    home, running, _ = mesh
    async with http_for(home, running, "alice") as http:
        rpc = await http.post(f"{base(running)}/a2a/worker", content=b"m=1", headers={
            "A2A-Version": "1.0", "content-type": "application/x-www-form-urlencoded"})
        assert rpc.json()["error"]["code"] == -32005
        rest = await http.post(f"{base(running)}/a2a/worker/message:send", content=b"m=1",
                               headers={"A2A-Version": "1.0", "content-type": "text/plain"})
        assert rest.status_code == 415


async def test_tasks_outlive_a_hub_restart(tmp_path: Path) -> None:
    """Tasks are kept in the hub's store: after a restart the caller still gets and lists its
    task, and another caller still cannot."""
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "bob": [], "worker": []})

    async def serve_worker(running: RunningHub) -> Agent:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return {"echo": req}

        @worker.skill("hang")
        async def hang(ctx: SkillContext, req: Any) -> Any:
            await asyncio.Event().wait()
        return worker

    async with background_hub(home) as running:
        async with await serve_worker(running), http_for(home, running, "alice") as http:
            client = await create_client(f"{base(running)}/a2a/worker", client_config=ClientConfig(
                streaming=False, httpx_client=http))
            [done] = await collect(client, message({"n": 1}, "echo"))
            task_id = done["task"]["id"]
            streaming = await create_client(f"{base(running)}/a2a/worker",
                                            client_config=ClientConfig(httpx_client=http))
            stream = streaming.send_message(message({"n": 2}, "hang"))  # never answered
            orphan = MessageToDict(await anext(stream))["task"]["id"]
            await stream.aclose()
    async with background_hub(home) as running:
        async with http_for(home, running, "alice") as http, \
                http_for(home, running, "bob") as other:
            url = f"{base(running)}/a2a/worker"
            client = await create_client(url, client_config=ClientConfig(httpx_client=http))
            task = await client.get_task(GetTaskRequest(id=task_id))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert task_id in {t.id for t in (await client.list_tasks(ListTasksRequest())).tasks}
            stranger = await create_client(url, client_config=ClientConfig(httpx_client=other))
            with pytest.raises(Exception, match=r"(?i)not found"):
                await stranger.get_task(GetTaskRequest(id=task_id))
            left = await client.get_task(GetTaskRequest(id=orphan))  # its runner died with the hub
            assert left.status.state == TaskState.TASK_STATE_FAILED
            assert "restarted" in MessageToDict(left.status.message)["parts"][0]["text"]
