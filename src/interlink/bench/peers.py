"""The processes `interlink bench` measures against, each started on its own:

    python -m interlink.bench.peers echo-agent CREDENTIAL HUB_URL
        a mesh agent with one skill, `echo`, that returns its input
    python -m interlink.bench.peers a2a-echo PORT
        the baseline: a plain a2a-sdk server (JSON-RPC, in-memory task store) whose executor
        answers every message with a completed task holding the input as an artifact, or, when
        the request's metadata says `"reply": "message"`, with a bare Message
    python -m interlink.bench.peers agents HOME HUB_URL NAMES READY_FILE
        many mesh agents in one process (the scale section), each with an `echo` skill

Each prints one line (`ready ...`) once it serves, then serves until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..sdk._loop import run as run_loop

# The baseline runs a2a-sdk as the hub's A2A edge does, and as a plain a2a-sdk install (without
# OpenTelemetry) does: without a2a-sdk's own spans (see `interlink.edges`).
os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")


async def echo_agent(credential: str, url: str) -> None:
    from .. import Agent, SkillContext
    agent = Agent(Path(credential).stem, credential=credential, hub=url)  # agents/<name>.cred

    @agent.skill("echo")
    async def echo(ctx: SkillContext, req: Any) -> Any:
        return req

    await agent.start(wait=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


def a2a_echo(port: int) -> None:
    import uvicorn
    from a2a.helpers import new_task_from_user_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCard, Message, Role
    from google.protobuf.json_format import ParseDict
    from starlette.applications import Starlette

    class Echo(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            message = context.message
            assert message is not None
            if context.metadata.get("reply") == "message":
                answer = Message(role=Role.ROLE_AGENT, message_id=message.message_id + "-r")
                answer.parts.extend(message.parts)
                await event_queue.enqueue_event(answer)
                return
            task = context.current_task or new_task_from_user_message(message)
            await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.add_artifact(list(message.parts), name="result")
            await updater.complete()

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    url = f"http://127.0.0.1:{port}/"
    card = ParseDict({
        "name": "echo", "description": "echoes its input", "version": "1.0",
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC",
                                 "protocolVersion": "1.0"}],
        "capabilities": {"streaming": True}, "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "skills": [{"id": "echo", "name": "echo", "description": "echo", "tags": ["echo"]}]},
        AgentCard())
    handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(),
                                    agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card),
                            *create_jsonrpc_routes(handler, rpc_url="/")])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, log_level="warning"))
    print("ready", flush=True)
    server.run()


async def many_agents(home: Path, url: str, names: list[str], ready: Path) -> None:
    from .. import Agent, SkillContext
    agents = []
    for name in names:
        agent = Agent(name, credential=home / "agents" / f"{name}.cred", hub=url)

        @agent.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return req

        agents.append(agent)
    started = time.monotonic()
    for i in range(0, len(agents), 50):
        await asyncio.gather(*(a.start() for a in agents[i:i + 50]))
    ready.write_text(json.dumps({"connect_seconds": time.monotonic() - started}))
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    what, *args = argv
    if what == "echo-agent":  # as `Agent.run()` runs one
        run_loop(echo_agent(args[0], args[1]))
    elif what == "a2a-echo":
        a2a_echo(int(args[0]))
    elif what == "agents":
        run_loop(many_agents(Path(args[0]), args[1], args[2].split(","), Path(args[3])))
    else:
        raise SystemExit(f"unknown peer {what!r}: echo-agent, a2a-echo or agents")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
