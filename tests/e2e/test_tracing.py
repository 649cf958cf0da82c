"""Traces across agents: an outside A2A client calls bob through the hub's A2A edge with its
own `traceparent`; bob's skill publishes an event; carol's handler gets it. The hub's spans
(from its trace store) and the agents' spans (from an in-memory exporter, the SDK using this
process's tracer provider) form one trace, nested as it happened, with the gate's verdict on
each crossing. Also: `interlink trace`, `interlink tail`, and OTLP export to a collector."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from interlink import Agent, EventContext, GateDenied, SkillContext, connect
from interlink.identity import issue_token
from interlink.server import background_hub

from ..helpers import interlink_cli, make_home, wait_until

TRACE_ID = "ab" * 16


class WhileTesting(SimpleSpanProcessor):
    """Records only while its test runs (a process's provider cannot drop a processor)."""

    on = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            super().on_end(span)


@pytest.fixture
def agent_spans() -> Iterator[InMemorySpanExporter]:
    """This process's tracer provider, as an agent's own would be (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    recording = WhileTesting(exporter)
    provider.add_span_processor(recording)
    yield exporter
    recording.on = False
    exporter.clear()


async def test_one_trace_across_the_edge_a_skill_and_an_event_handler(
        tmp_path: Path, agent_spans: InMemorySpanExporter) -> None:
    home = make_home(tmp_path / "home", {"alice": ["bob.*"], "bob": [], "carol": []})
    home.grant("bob", publish=["plans.*"])
    home.grant("carol", subscribe=["plans.*"])
    handled = asyncio.Event()
    async with background_hub(home) as running:
        bob = Agent("bob", credential=home.credential_path("bob"), hub=running.url)
        carol = Agent("carol", credential=home.credential_path("carol"), hub=running.url)
        tracer = trace.get_tracer("bob's own code")

        @bob.skill("plan")
        async def plan(ctx: SkillContext, req: Any) -> Any:
            with tracer.start_as_current_span("bob asks his LLM"):  # the agent's own span
                await ctx.publish("plans.new", {"plan": req})
            return {"planned": True}

        @carol.on_event("plans.*")
        async def on_plan(ctx: EventContext, event: Any) -> None:
            handled.set()

        async with bob, carol:
            parent = f"00-{TRACE_ID}-{'cd' * 8}-01"
            token = issue_token(running.hub.key, "alice")
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.post(
                    f"http://127.0.0.1:{running.port}/a2a/bob",
                    headers={"A2A-Version": "1.0", "traceparent": parent,
                             "Authorization": f"Bearer {token}"},
                    json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                        "message": {"messageId": "m1", "role": "ROLE_USER",
                                    "parts": [{"data": {"goal": "ship"}}]},
                        "metadata": {"skill": "plan"}}})
            assert answer.status_code == 200, answer.text
            await asyncio.wait_for(handled.wait(), 10)
            await wait_until(lambda: any(  # the handler's span ends after it returns
                s.name == "event plans.new" for s in agent_spans.get_finished_spans()))
        assert running.hub.traces is not None
        await running.hub.traces.flush()
        log_ = running.hub.traces.log
        everything = [s for m in await log_.read(limit=10_000)
                      for s in json.loads(m.data)]
    hub_spans = [s for s in everything if s["trace_id"] == TRACE_ID]
    mine = [s for s in agent_spans.get_finished_spans()
            if f"{s.context.trace_id:032x}" == TRACE_ID]
    names = {s.name for s in mine}
    assert {"skill bob.plan", "bob asks his LLM", "event plans.new"} <= names, names
    by_name = {s.name: s for s in mine}
    skill, llm, handler = by_name["skill bob.plan"], by_name["bob asks his LLM"], \
        by_name["event plans.new"]
    assert llm.parent is not None and llm.parent.span_id == skill.context.span_id
    call = next(s for s in hub_spans if s["name"] == "call bob.plan")
    publish = next(s for s in hub_spans if s["name"] == "publish plans.new")
    # the hub's span of the publish nests under the agent's span it was sent from, and so
    # does carol's handler: one trace, as it happened
    assert publish["parent_id"] == f"{llm.context.span_id:016x}"
    assert handler.parent is not None and handler.parent.span_id == llm.context.span_id
    attributes = call["attributes"]
    assert attributes["interlink.decision"] == "accepted"
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.agent.name"] == "bob"
    assert {"authenticate", "authorize", "label", "validate", "guard", "commit"} <= set(
        attributes["interlink.gate.passed"])
    assert any(s["name"].startswith("reply") for s in hub_spans)


async def test_trace_and_tail_show_a_conversation_and_its_refusal(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"alice": ["worker.echo"], "worker": []})
    async with background_hub(home) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        @worker.skill("secret")
        async def secret(ctx: SkillContext, req: Any) -> Any:
            return "never"

        async with worker, connect("alice", credential=home.credential_path("alice"),
                                   hub=running.url) as alice:
            assert await alice.call("worker", "echo", {"n": 1}, conversation="conv-1") == {
                "n": 1}
            with pytest.raises(GateDenied):
                await alice.call("worker", "secret", None, conversation="conv-2")
        assert running.hub.traces is not None
        await running.hub.traces.flush()
    cli = interlink_cli(home)
    tail = cli("tail", "--since", "600", "--no-follow", "--refused")
    assert tail.returncode == 0, tail.stderr
    assert "refused at authorize" in tail.stdout and "secret" in tail.stdout
    assert "echo" not in tail.stdout  # refusals only
    everything = cli("tail", "--since", "600", "--no-follow", "--agent", "alice")
    assert "call echo" in everything.stdout and "call secret" in everything.stdout
    conversation = "conv-1"
    shown = cli("trace", conversation)
    assert shown.returncode == 0, shown.stderr
    assert "alice" in shown.stdout and "worker" in shown.stdout and "accepted" in shown.stdout
    diagram = cli("trace", conversation, "--mermaid")
    assert diagram.stdout.startswith("sequenceDiagram") and "alice->>worker" in diagram.stdout
    as_json = json.loads(cli("trace", conversation, "--json").stdout)
    assert {s["attributes"]["interlink.kind"] for s in as_json} >= {"call", "reply"}
    missing = cli("trace", "no-such-conversation")
    assert missing.returncode != 0 and "no spans for conversation" in missing.stderr


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    """A test OTLP/HTTP endpoint that keeps what it is sent."""
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces", got
    finally:
        server.shutdown()
        server.server_close()


async def test_spans_are_exported_as_otlp_protobuf(
        tmp_path: Path, collector: tuple[str, list[bytes]]) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    endpoint, got = collector
    home = make_home(tmp_path / "home", {"alice": ["worker.*"], "worker": []})
    policy = home.load_policy()
    policy.hub.otlp_endpoint = endpoint
    home.save_policy(policy)
    async with background_hub(home) as running:
        worker = Agent("worker", credential=home.credential_path("worker"), hub=running.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        async with worker, connect("alice", credential=home.credential_path("alice"),
                                   hub=running.url) as alice:
            assert await alice.call("worker", "echo", 7) == 7
    await wait_until(lambda: bool(got), timeout=10)  # flushed at the hub's stop at the latest
    request = ExportTraceServiceRequest()
    request.ParseFromString(got[0])
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans
             for span in ss.spans]
    service = {a.key: a.value.string_value for rs in request.resource_spans
               for a in rs.resource.attributes}
    assert service["service.name"] == "interlink-hub"
    assert any(span.name == "call worker.echo" for span in spans)
    call = next(span for span in spans if span.name == "call worker.echo")
    assert {a.key for a in call.attributes} >= {"gen_ai.conversation.id", "interlink.decision"}
