"""`Agent`: an agent with skills, served over one connection to the hub.

    drafter = Agent("drafter")                       # credential from $INTERLINK_HOME/agents/

    @drafter.skill("draft", input_schema=DraftRequest, output_schema=Draft)
    async def draft(ctx, req):
        review = await ctx.call("editor", "review", {"text": "..."})
        return Draft(...)

    @drafter.on_event("blog.reviews.*", durable="drafter-reviews")
    async def reviewed(ctx, event):                  # acked when it returns; nak'ed if it raises
        ...

    drafter.run()                                    # or: async with drafter: ...
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from ..envelope import body_data, error_body, reply_body, valid_agent_name
from ..errors import ConfigError, GateDenied, InputRequired, InterlinkError, UsageError
from ..home import resolve_home
from ..identity import Credential, CredentialFile
from ._connection import Connection, Reply
from ._events import Event, Subscription
from ._loop import run as run_loop
from ._memory import Memory
from ._tracing import handling
from ._transport import Transport

log = logging.getLogger("interlink.agent")

SkillFn = Callable[..., Any]
SchemaLike = type[BaseModel] | dict[str, Any] | None
DONE_CACHE = 1024
EventFn = Callable[..., Any]


def credential_path(name: str, credential: str | os.PathLike[str] | None) -> Path:
    if credential:
        return Path(credential)
    if env := os.environ.get("INTERLINK_CREDENTIAL"):
        return Path(env)
    return resolve_home(None) / "agents" / f"{name}.cred"


def home_of(path: Path | None) -> Path | None:
    """The mesh home a credential file lives in (`<home>/agents/<name>.cred`), if it does."""
    if path is not None and path.parent.name == "agents":
        return path.parent.parent
    return None


def _schema(schema: SchemaLike) -> dict[str, Any]:
    if schema is None:
        return {}
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    raise TypeError("a skill schema is a pydantic model class or a JSON Schema dict")


@dataclass(frozen=True)
class Skill:
    id: str
    fn: SkillFn
    description: str
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    output_label: dict[str, Any] = field(default_factory=dict)

    def card(self) -> dict[str, Any]:
        card = {"id": self.id, "name": self.id, "description": self.description,
                "input_schema": self.input_schema, "output_schema": self.output_schema}
        if self.output_label:
            card["output_label"] = self.output_label
        return card


class SkillContext:
    """What a running skill knows about its call, and how it talks to the mesh within it."""

    def __init__(self, connection: Connection, call: dict[str, Any], origin: Credential) -> None:
        self._connection = connection
        self._call = call
        self.call_id: str = call["id"]
        self.caller: str = origin.agent
        self.conversation: str = call["conversation"]
        self.traceparent: str = call["traceparent"]
        self.hops: int = call.get("hops", 0)
        self.deadline: float | None = call.get("deadline")
        self.labels: dict[str, Any] = call.get("effective_labels") or call.get("labels") or {}
        """The call's label as the hub computed it: level, tags, integrity, provenance."""
        self.message: dict[str, Any] = (call.get("body") or {}).get("message") or {}
        """The A2A message of the call as the caller sent it (parts, metadata, and at the A2A
        edge the task and context ids)."""

    async def call(self, agent: str, skill: str, data: Any = None, *,
                   timeout: float = 30.0, delegation: str | None = None) -> Any:
        """Call another agent within this conversation (the hop count and trace carry on);
        with `delegation`, for the agent that gave the token."""
        reply = await self.call_with_labels(agent, skill, data, timeout=timeout,
                                            delegation=delegation)
        return reply.value

    async def call_with_labels(self, agent: str, skill: str, data: Any = None, *,
                               timeout: float = 30.0, delegation: str | None = None) -> Reply:
        """Like `call`; the `Reply` also carries the answer's effective label."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return await self._connection.call_with_labels(
            agent, skill, data, timeout=timeout, conversation=self.conversation,
            parent=self.call_id, hops=self.hops + 1, traceparent=self.traceparent,
            delegation=delegation)

    async def progress(self, note: str | None = None, *, extend: float | None = None) -> None:
        """Tell the caller the work goes on; moves the call's deadline out by `extend` seconds
        (by default, the call's own timeout)."""
        await self._connection.progress(self._call, note, extend)

    async def artifact(self, data: Any = None, *, text: str | None = None,
                       name: str | None = None, append: bool = False,
                       last_chunk: bool = True) -> None:
        """Stream part of the output to the caller before the call ends (an A2A artifact
        update at the A2A edge); also moves the deadline out like `progress`."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        part = {"text": text} if text is not None else {"data": data}
        artifact: dict[str, Any] = {"parts": [part], "append": append, "lastChunk": last_chunk}
        if name is not None:
            artifact["name"] = name
        await self._connection.progress(self._call, None, None, artifact)

    def memory(self, namespace: str) -> Memory:
        """A shared-memory namespace, read and written as this agent in this conversation."""
        return Memory(self._connection, namespace, conversation=self.conversation)

    async def publish(self, topic: str, data: Any = None, *,
                      event_id: str | None = None) -> dict[str, Any]:
        """Publish an event within this conversation; returns once the hub committed it."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return await self._connection.publish(
            topic, data, event_id=event_id, conversation=self.conversation,
            parent=self.call_id, hops=self.hops + 1, traceparent=self.traceparent)


class EventContext:
    """What an event handler knows, and how it talks to the mesh in the event's conversation."""

    def __init__(self, connection: Connection, event: Event) -> None:
        self._connection = connection
        self.event = event
        self.conversation = event.conversation
        self.traceparent: str = event.envelope["traceparent"]
        self.hops: int = event.envelope.get("hops", 0)

    def memory(self, namespace: str) -> Memory:
        """A shared-memory namespace, read and written in the event's conversation."""
        return Memory(self._connection, namespace, conversation=self.conversation)

    async def call(self, agent: str, skill: str, data: Any = None, *,
                   timeout: float = 30.0) -> Any:
        return (await self.call_with_labels(agent, skill, data, timeout=timeout)).value

    async def call_with_labels(self, agent: str, skill: str, data: Any = None, *,
                               timeout: float = 30.0) -> Reply:
        """Like `call`; the `Reply` also carries the answer's effective label."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return await self._connection.call_with_labels(
            agent, skill, data, timeout=timeout, conversation=self.conversation,
            parent=self.event.id, hops=self.hops + 1, traceparent=self.traceparent)

    async def publish(self, topic: str, data: Any = None, *,
                      event_id: str | None = None) -> dict[str, Any]:
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return await self._connection.publish(
            topic, data, event_id=event_id, conversation=self.conversation,
            parent=self.event.id, hops=self.hops + 1, traceparent=self.traceparent)


@dataclass(frozen=True)
class EventHandler:
    pattern: str
    fn: EventFn
    options: dict[str, Any]
    retry_delay: float


class Agent:
    def __init__(self, name: str, *, credential: str | os.PathLike[str] | CredentialFile | None
                 = None, hub: str | list[str] | None = None, description: str = "",
                 version: str = "0.1.0",
                 labels: dict[str, Any] | None = None, transport: Transport | None = None,
                 tls_ca: str | os.PathLike[str] | None = None) -> None:
        """`tls_ca`: the CA a `wss://` hub's certificate is checked against (default:
        `$INTERLINK_CA`, else the mesh home's `hub.tls.ca`, else the system's trust store)."""
        if not valid_agent_name(name):
            raise ConfigError(f"{name!r} is not a valid agent name")
        self.name = name
        self.description = description
        self.version = version
        self._credential = credential if isinstance(credential, CredentialFile) else None
        self._credential_path = credential_path(
            name, None if isinstance(credential, CredentialFile) else credential)
        self.labels = labels or {}
        """Labels put on everything this agent sends (e.g. where a proxied agent's answers
        come from)."""
        self._transport = transport
        self._hub = hub
        self._tls_ca = tls_ca
        self.skills: dict[str, Skill] = {}
        self._connection: Connection | None = None
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._done: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.handlers: list[EventHandler] = []
        self._consumers: list[asyncio.Task[None]] = []
        self._acked: OrderedDict[tuple[str, int], None] = OrderedDict()

    # -- declaring ---------------------------------------------------------------------------

    def skill(self, skill_id: str, *, input_schema: SchemaLike = None,
              output_schema: SchemaLike = None, description: str | None = None,
              output_label: dict[str, Any] | None = None) -> Callable[[SkillFn], SkillFn]:
        """Declare a skill. Schemas are pydantic models (input parsed into the model, output
        dumped from it) or JSON Schema dicts; they go into the agent's card. `output_label`
        is what the skill's answers carry at least (e.g. `{"level": "confidential", "tags":
        ["phi"]}` for data it reads from its own records): the hub joins it into every reply."""
        if skill_id in self.skills:
            raise ValueError(f"skill {skill_id!r} is declared twice on {self.name}")
        if self._connection is not None:
            raise UsageError("declare skills before the agent starts")

        def register(fn: SkillFn) -> SkillFn:
            self.skills[skill_id] = Skill(
                id=skill_id, fn=fn, description=description or inspect.getdoc(fn) or "",
                input_model=input_schema if isinstance(input_schema, type) else None,
                output_model=output_schema if isinstance(output_schema, type) else None,
                input_schema=_schema(input_schema), output_schema=_schema(output_schema),
                output_label=dict(output_label or {}))
            return fn
        return register

    def on_event(self, pattern: str, *, durable: str | None = None, deliver: str | None = None,
                 ack_wait: float | None = None, max_deliver: int | None = None,
                 retry_delay: float = 1.0) -> Callable[[EventFn], EventFn]:
        """Handle events on `pattern` (`*` one token, `>` the rest). With `durable`, a named
        durable consumer: events wait for the agent while it is away, each is acked when the
        handler returns and redelivered (after `retry_delay`) when it raises; agents sharing a
        durable name share its events. Without it, a live subscription from now on."""
        if self._connection is not None:
            raise UsageError("declare event handlers before the agent starts")

        def register(fn: EventFn) -> EventFn:
            options = {k: v for k, v in {"durable": durable, "deliver": deliver,
                                         "ack_wait": ack_wait,
                                         "max_deliver": max_deliver}.items() if v is not None}
            self.handlers.append(EventHandler(pattern, fn, options, retry_delay))
            return fn
        return register

    def card(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "version": self.version,
                "skills": [s.card() for s in self.skills.values()]}

    # -- running -----------------------------------------------------------------------------

    async def start(self, *, wait: bool = False) -> None:
        """Connect and serve in the background. With `wait`, a hub that is not up yet is
        waited for (retried with backoff, logged); without it, ConnectionLost at once."""
        credential = self._credential or CredentialFile.load(self._credential_path)
        if credential.credential.agent != self.name:
            raise ConfigError(f"{self._credential_path} is the credential of "
                              f"{credential.credential.agent!r}, not of {self.name!r}")
        self._connection = Connection(credential, url=self._hub, card=self.card(),
                                      on_call=self._on_call, transport=self._transport,
                                      labels=self.labels, tls_ca=self._tls_ca,
                                      home=None if self._credential else
                                      home_of(self._credential_path))
        await self._connection.open(wait=wait)
        for handler in self.handlers:
            stream = await self._connection.subscribe(handler.pattern, **handler.options)
            self._consumers.append(asyncio.ensure_future(self._consume(handler, stream)))

    async def stop(self) -> None:
        for task in [*self._running.values(), *self._consumers]:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        self._consumers.clear()
        if self._connection is not None:
            await self._connection.aclose()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Serve until interrupted, or until the hub refuses to take the agent back after a
        dropped connection (suspended, removed, a credential it no longer accepts): then
        GateDenied says why."""
        await self.start(wait=True)
        try:
            await self.connection.wait_closed()
            if self.connection.refusal is not None:
                raise self.connection.refusal
        finally:
            await self.stop()

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C). A refusal that retrying cannot fix ends the
        process with one line saying why and exit status 1."""
        try:
            run_loop(self.serve_forever())
        except KeyboardInterrupt:
            pass
        except (GateDenied, ConfigError) as exc:
            print(f"{self.name}: stopped: {exc}", file=sys.stderr)
            raise SystemExit(1) from None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise UsageError(f"agent {self.name} is not started: `async with agent:` or "
                             "`agent.run()` first")
        return self._connection

    async def call(self, agent: str, skill: str, data: Any = None, *,
                   timeout: float = 30.0) -> Any:
        """Start a new conversation by calling another agent."""
        return await self.connection.call(agent, skill, data, timeout=timeout)

    async def call_with_labels(self, agent: str, skill: str, data: Any = None, *,
                               timeout: float = 30.0) -> Reply:
        """Like `call`; the `Reply` also carries the answer's effective label."""
        return await self.connection.call_with_labels(agent, skill, data, timeout=timeout)

    def memory(self, namespace: str) -> Memory:
        """A shared-memory namespace, read and written as this agent (once started)."""
        return Memory(self.connection, namespace)

    async def publish(self, topic: str, data: Any = None, *,
                      event_id: str | None = None) -> dict[str, Any]:
        """Publish an event (a new conversation); returns once the hub committed it."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return await self.connection.publish(topic, data, event_id=event_id)

    # -- handling events ---------------------------------------------------------------------

    async def _consume(self, handler: EventHandler, stream: Subscription) -> None:
        """Run the handler on each event in order; ack on return, nak on an exception. An event
        delivered again after it was acked (a redelivery racing a reconnect) is not re-run."""
        async for event in stream:
            key = (event.durable or "", event.seq)
            if event.durable is not None and key in self._acked:
                await _settle(event.ack())
                continue
            try:
                ctx = EventContext(self.connection, event)
                with handling(f"event {event.topic}", ctx.traceparent, {
                        "gen_ai.agent.name": self.name,
                        "gen_ai.conversation.id": event.conversation,
                        "interlink.event.id": event.id, "interlink.topic": event.topic,
                        "interlink.event.seq": event.seq}, SpanKind.CONSUMER) as inside:
                    ctx.traceparent = inside
                    result = handler.fn(ctx, event)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: handler for %s failed on event %s (delivery %d); it will be "
                              "delivered again", self.name, event.topic, event.seq,
                              event.deliveries)
                await _settle(event.nak(handler.retry_delay))
                continue
            await _settle(event.ack())
            if event.durable is not None:
                self._acked[key] = None
                while len(self._acked) > DONE_CACHE:
                    self._acked.popitem(last=False)

    # -- serving calls -----------------------------------------------------------------------

    async def _on_call(self, call: dict[str, Any], origin: Credential) -> None:
        call_id = call["id"]
        if call_id in self._running:
            return  # delivered again while still running: the reply will follow
        if call_id in self._done:
            await self.connection.reply(call, self._done[call_id])
            return
        task = asyncio.current_task()
        assert task is not None
        self._running[call_id] = task
        try:
            body = await self._run_skill(call, origin)
        finally:
            self._running.pop(call_id, None)
        self._done[call_id] = body
        while len(self._done) > DONE_CACHE:
            self._done.popitem(last=False)
        await self.connection.reply(call, body)

    async def _run_skill(self, call: dict[str, Any], origin: Credential) -> dict[str, Any]:
        _, _, skill_id = call["target"].partition(".")
        skill = self.skills.get(skill_id)
        if skill is None:
            return error_body("agent", "unknown_skill",
                              f"{self.name} has no skill {skill_id!r}; it has "
                              f"{sorted(self.skills) or 'none'}")
        try:
            data = body_data(call.get("body") or {})
        except ValueError as exc:
            return error_body("agent", "bad_input", str(exc))
        if skill.input_model is not None:
            try:
                data = skill.input_model.model_validate(data)
            except ValidationError as exc:
                return error_body("agent", "bad_input",
                                  f"input does not match {skill.input_model.__name__}: {exc}")
        ctx = SkillContext(self.connection, call, origin)
        try:
            with handling(f"skill {self.name}.{skill_id}", call["traceparent"], {
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.name,
                    "gen_ai.conversation.id": call["conversation"],
                    "interlink.call.id": call["id"], "interlink.caller": call["sender"],
                    "interlink.skill": skill_id}) as inside:
                ctx.traceparent = inside
                result = skill.fn(ctx, data)
                if inspect.isawaitable(result):
                    result = await result
        except InputRequired as exc:
            return {**reply_body(exc.prompt, call["id"] + ":input"), "state": "input_required"}
        except (GateDenied, InterlinkError) as exc:
            return error_body("skill", "skill_error",
                              f"{self.name}.{skill_id} failed: {exc}")
        except Exception as exc:
            log.exception("%s.%s raised", self.name, skill_id)
            return error_body("skill", "skill_error",
                              f"{self.name}.{skill_id} raised {type(exc).__name__}: {exc}")
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        elif skill.output_model is not None:
            try:
                result = skill.output_model.model_validate(result).model_dump(mode="json")
            except ValidationError as exc:
                return error_body("skill", "bad_output",
                                  f"output does not match {skill.output_model.__name__}: {exc}")
        return reply_body(result, call["id"] + ":reply")



async def _settle(action: Any) -> None:
    try:
        await action
    except InterlinkError as exc:  # the hub keeps it in flight and redelivers it after its
        log.error("settling an event failed (%s); the hub will redeliver it after ack_wait, "
                  "and it will be settled then without running the handler again", exc)
