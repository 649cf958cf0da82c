"""The A2A 1.0 edge: every mesh agent is an A2A agent at `/a2a/{agent}`.

    GET  /a2a/{agent}/.well-known/agent-card.json    the agent's card, signed by the hub
    POST /a2a/{agent}  (or /a2a/{agent}/)            JSON-RPC: SendMessage, SendStreamingMessage,
                                                     GetTask, ListTasks, CancelTask,
                                                     SubscribeToTask (0.3 methods too)
    *    /a2a/{agent}/message:send, /tasks/...       HTTP+JSON (REST) binding
    GET  /.well-known/agent-card.json                the hub's own card: its agents' skills

The protocol work is a2a-sdk's (routes, request handler, task store, SSE, version
negotiation with 0.3 served through its compat layer). What is ours is the executor: a message
becomes a mesh call made by the caller's identity (the bearer token's agent) over an
in-process connection, so the hub's gate decides exactly as for SDK agents — authenticate,
authorize (policy), validate, commit, audit. Task states map one to one: SUBMITTED (task
created), WORKING (the gate accepted the call; progress notes arrive as status updates and
`ctx.artifact()` as artifact updates), INPUT_REQUIRED (the skill raised `InputRequired`),
COMPLETED (the reply, as the result artifact), REJECTED (the skill declined, see `$a2a`
below), FAILED (the skill failed or timed out), CANCELED. A gate refusal is a standard A2A
error carrying {stage, code, reason, rule}. A request without a bearer token is refused (401)
unless the operator opted in with `hub.a2a_anonymous_caller` (see `policy.HubSettings`).

The reply becomes one artifact: a text part for a string, a data part for any other value, none
for `None`. A skill that needs more of A2A returns `{"$a2a": {...}}` (`A2A_RESULT`):

    parts:  [Part, ...]             ProtoJSON parts, e.g. files: {"raw" | "url", "filename",
                                    "mediaType"}; instead of the one text or data part
    reply:  "artifact" (default)    the parts are the result artifact
            "status"                the parts are the final status message (no artifact)
            "message"               answer with a bare Message instead of a task: honoured
                                    when the message starts a task and the skill answers
                                    within `MESSAGE_WINDOW` without progress or artifacts,
                                    else like "status"
    state:  "completed" (default) | "rejected"    the task's final state

So that a quick answer can still be a bare Message, a new task is announced (Task, then
WORKING) at the skill's first progress note or artifact, at its outcome, or `MESSAGE_WINDOW`
after the gate accepted the call, whichever comes first.

Tasks and their streams belong to the identity that created them: a2a-sdk's store is scoped
by the authenticated user, which here is the token's agent.

Media types: a request body must be JSON (`application/json` or `application/*+json`), else
the answer is ContentTypeNotSupported. REST answers are `application/a2a+json` (A2A 1.0.1),
or `application/json` to a client that speaks that (A2A 1.0.0, see `_plain_json_client`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict, build_error_response
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import TaskUpdater
from a2a.types import AgentCard, Message, Part, Role, TaskState
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
)
from a2a.utils.signing import create_agent_card_signer
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from starlette.applications import Starlette
from starlette.authentication import SimpleUser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import strictjson
from ..envelope import TRACEPARENT, child_traceparent, new_id, new_traceparent
from ..errors import (
    CallTimeout,
    GateDenied,
    InputRequired,
    InterlinkError,
    SkillFailed,
)
from ..logs import logged
from ..sdk import Connection
from ..tasks import Tasks
from .a2a_tasks import TASKS_BUCKET, StoredTaskStore
from .bearer import NotAuthenticated, acting_agent
from .local import edge_credential, local_transport

if TYPE_CHECKING:
    from ..hub import Hub
    from ..services.registry import AgentCard as MeshCard

log = logging.getLogger("interlink.a2a")

SCHEMAS_EXTENSION = "https://interlink.dev/a2a/ext/skill-schemas/v1"
"""Card extension carrying each skill's input and output JSON Schema (A2A's AgentSkill has no
schema field)."""
PROTOCOL_VERSION = "1.0"
LEGACY_VERSION = "0.3"  # served through a2a-sdk's compat layer
CARD_PATH = "/.well-known/agent-card.json"
A2A_JSON = "application/a2a+json"
A2A_RESULT = "$a2a"
"""The key of a skill result that says how to answer over A2A (see the module's doc)."""
MESSAGE_WINDOW = 0.25
"""Seconds a new task is held back so that a skill answering at once can reply with a bare
Message; a skill that reports progress, or runs longer, gets its task announced then."""


class Edge:
    """Serves `/a2a/...` and the root card; one a2a-sdk app per mesh agent, made on demand."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._apps: dict[str, ASGIApp] = {}
        self._handlers: list[DefaultRequestHandler] = []
        self._connections: dict[str, Connection] = {}
        self._retiring = Tasks(log, "the A2A edge")
        """Connections handing over to a fresh credential, closed once their calls end."""
        self._lock = asyncio.Lock()
        self._sign = create_agent_card_signer(
            signing_key=hub.key.private,  # type: ignore[arg-type]
            protected_header={"alg": "EdDSA", "kid": hub.key.id, "typ": "JOSE",
                              "jku": None})

    async def aclose(self) -> None:
        await self._retiring.aclose()
        for connection in self._connections.values():
            await connection.aclose()
        for handler in self._handlers:
            with logged(log, "closing an A2A request handler"):
                await handler.aclose()

    # -- identity ------------------------------------------------------------------------------

    async def connection(self, agent: str, *, fresh: bool = False) -> Connection:
        """The in-process client connection that acts for `agent` (one per agent, reused until
        its short-lived credential nears expiry, or `fresh` is asked: then a new one takes over
        and the old one is closed once the calls it made have ended)."""
        async with self._lock:
            connection = self._connections.get(agent)
            if connection is not None and (fresh or _expiring(connection)):
                self._retire(connection)
                connection = None
            if connection is None or not connection.is_open:
                connection = Connection(edge_credential(self.hub, agent),
                                        transport=local_transport(self.hub, f"a2a:{agent}"),
                                        reconnect=True)
                await connection.open()
                self._connections[agent] = connection
            return connection

    async def start_call(self, agent: str, target: str, skill: str,
                         **call: Any) -> asyncio.Task[Any]:
        """Make a mesh call as `agent` and return the running call once the gate has accepted
        it; raise the refusal (`GateDenied`), or what kept the call from starting.

        A refusal `expired_credential` means the edge's short-lived credential ran out between
        taking the connection and the hub reading the call (a stalled loop, a slow request):
        the call was refused at authenticate, before anything was committed, so it is made
        once more on a fresh connection instead of failing the outside client's request."""
        for attempt in range(2):
            connection = await self.connection(agent, fresh=attempt > 0)
            accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def on_accepted(answer: Any, done: asyncio.Future[Any] = accepted) -> None:
                if not done.done():
                    done.set_result(answer)

            running = asyncio.ensure_future(connection.call(
                target, skill, on_accepted=on_accepted, **call))
            await asyncio.wait({running, accepted}, return_when=asyncio.FIRST_COMPLETED)
            if accepted.done() or not running.done():
                return running
            refusal = running.exception()
            if attempt or not (isinstance(refusal, GateDenied)
                               and refusal.code == "expired_credential"):
                raise refusal or RuntimeError("the call ended before the gate answered")
        raise AssertionError("unreachable")

    def _retire(self, connection: Connection) -> None:
        async def close_when_done() -> None:
            deadline = time.monotonic() + self.hub.settings.max_call_timeout_seconds
            while connection.pending_calls and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
            await connection.aclose()
        self._retiring.spawn(close_when_done())

    # -- cards ---------------------------------------------------------------------------------

    async def card(self, agent: str, base: str) -> AgentCard:
        """The agent's A2A card, from the card it registered, signed by the hub."""
        mesh_card = await self.hub.registry.card(agent)
        policy = self.hub.policy.current()
        return self._signed(_card_dict(agent, mesh_card, policy.agents[agent].description,
                                       f"{base}/a2a/{agent}"))

    async def hub_card(self, base: str) -> AgentCard:
        """The hub's card: every connected-or-known agent skill as `agent.skill`, served at
        `/a2a/hub`, which routes a message to the skill named in its metadata."""
        skills, schemas = [], {}
        for status in await self.hub.registry.statuses(self.hub.policy.current()):
            for skill in status.card.skills if status.card else []:
                skill_id = f"{status.name}.{skill.id}"
                skills.append({"id": skill_id, "name": skill_id,
                               "description": skill.description or skill_id,
                               "tags": [status.name]})
                schemas[skill_id] = {"input": skill.input_schema, "output": skill.output_schema}
        card = _base_card(f"Interlink hub {self.hub.key.id}",
                          "The mesh's agents; call one at /a2a/{agent} (see each agent's card), "
                          "or here naming the skill as metadata.skill = 'agent.skill'.",
                          "0.1.0", f"{base}/a2a/hub", skills, schemas)
        return self._signed(card)

    def _signed(self, card: dict[str, Any]) -> AgentCard:
        return self._sign(ParseDict(card, AgentCard()))

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/a2a/{agent}[/...]`: authenticate the bearer token (cards are public), then hand the
        request to the agent's a2a-sdk app with the path below the agent."""
        path: str = scope["path"]
        agent, _, rest = path.removeprefix("/a2a/").partition("/")
        policy = self.hub.policy.current()
        if agent != "hub" and not policy.enrolled(agent):
            await _json(scope, receive, send, 404, {
                "error": f"there is no agent {agent!r} on this mesh",
                "agents": f"{_base(scope)}{CARD_PATH}"})
            return
        rest = "/" + rest
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"traceparent", b"").decode()
        trace = (child_traceparent(incoming) if TRACEPARENT.fullmatch(incoming)
                 else new_traceparent())
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or []
                            if k != b"traceparent"] + [(b"traceparent", trace.encode())]
        if rest != CARD_PATH and scope["type"] == "http":
            caller = self._authenticate(headers.get(b"authorization", b"").decode(), agent)
            if isinstance(caller, str) and caller.startswith("!"):
                await _json(scope, receive, send, 401, {
                    "error": caller[1:],
                    "how": "send `Authorization: Bearer <token>`; an operator issues one with "
                           "`interlink token AGENT`"}, {"www-authenticate": "Bearer"})
                return
            scope["user"] = SimpleUser(caller)
            scope["auth"] = ["authenticated"]
            content_type = headers.get(b"content-type", b"").decode()
            if scope["method"] in ("POST", "PUT", "PATCH") and not _json_media(content_type):
                await _unsupported_media(scope, receive, send, content_type, rpc=rest == "/")
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):  # strict JSON, as at the gate
                body, problem = await _strict_body(
                    receive, 4 * self.hub.settings.max_envelope_bytes)
                if problem is not None:
                    await _bad_request(scope, receive, send, problem, rpc=rest == "/")
                    return
                receive = _replay(body, receive)
            if not _SAFE_PATH.fullmatch(rest):
                await _bad_request(scope, receive, send, "the path holds characters no task id "
                                   "or method uses", rpc=False, status=404)
                return
        scope["path"] = rest
        scope["raw_path"] = rest.encode()
        scope["root_path"] = scope.get("root_path", "") + f"/a2a/{agent}"
        app = self._apps.get(agent) or await self._make_app(agent, _base(scope))

        plain = rest not in ("/", CARD_PATH) and _plain_json_client(headers)
        modified = await self._card_modified(agent) if rest == CARD_PATH else None

        async def send_with_trace(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent = message.get("headers", [])
                if modified is not None:  # cards: when the agent last registered it
                    sent = [*sent, (b"last-modified",
                                    formatdate(modified, usegmt=True).encode())]
                if plain:  # answer in the client's own media type
                    sent = [(k, b"application/json" if k.lower() == b"content-type"
                             and v == A2A_JSON.encode() else v) for k, v in sent]
                message = {**message, "headers": [*sent, (b"traceparent", trace.encode())]}
            await send(message)

        await app(scope, receive, send_with_trace)

    async def _card_modified(self, agent: str) -> float:
        """When an agent's card last changed: its registration, or the hub's start."""
        if agent == "hub":
            return self.hub.started
        entry = await self.hub.registry.kv.get(f"cards/{agent}")
        return entry.ts if entry is not None else self.hub.started

    def _authenticate(self, authorization: str, served: str) -> str:
        """The agent a bearer token speaks for, or '!' + why not. A request without any
        `Authorization` acts as `hub.a2a_anonymous_caller[served]` when the operator opted in."""
        policy = self.hub.policy.current()
        anonymous = policy.hub.a2a_anonymous_caller.get(served)
        if not authorization and anonymous is not None:
            if not policy.enrolled(anonymous):
                return f"!hub.a2a_anonymous_caller names {anonymous!r}, who is not enrolled"
            return anonymous
        try:
            return acting_agent(self.hub, authorization)
        except NotAuthenticated as exc:
            return f"!{exc}"

    async def _make_app(self, agent: str, base: str) -> ASGIApp:
        card = await (self.hub_card(base) if agent == "hub" else self.card(agent, base))
        handler = DefaultRequestHandler(agent_executor=MeshExecutor(self, agent),
                                        task_store=StoredTaskStore(await self.hub.store.kv(
                                            TASKS_BUCKET, history=4), agent,
                                            started=self.hub.started), agent_card=card)
        self._handlers.append(handler)

        async def fresh_card(_: AgentCard) -> AgentCard:
            return await (self.hub_card(base) if agent == "hub" else self.card(agent, base))

        app = Starlette(routes=[
            *create_agent_card_routes(card, card_modifier=fresh_card, card_url=CARD_PATH,
                                      cache_control="max-age=60"),
            *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
            *create_rest_routes(handler, enable_v0_3_compat=True),
        ])
        self._apps[agent] = app
        return app


class MeshExecutor(AgentExecutor):
    """Turns an A2A message into a mesh call by the caller's identity, and the call's life into
    task events."""

    def __init__(self, edge: Edge, agent: str) -> None:
        self.edge = edge
        self.agent = agent
        self._running: dict[str, asyncio.Task[Any]] = {}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None
        caller = context.call_context.user.user_name
        target, skill = await self._target(context)
        headers = context.call_context.state.get("headers") or {}
        task = context.current_task or new_task_from_user_message(message)
        # progress and artifact chunks of one call, relayed as they come: bounded upstream by
        # the callee's control-rate budget at the gate (`hub.control_rate_per_agent`)
        progress: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reported = asyncio.Event()  # the skill sent progress or an artifact

        def on_progress(body: dict[str, Any]) -> None:
            progress.put_nowait(body)
            reported.set()

        wire = MessageToDict(message, preserving_proto_field_name=False)
        wire.setdefault("taskId", task.id)
        wire.setdefault("contextId", task.context_id)
        try:
            call = await self.edge.start_call(
                caller, target, skill, message=wire, timeout=_timeout(context),
                call_id=new_id(), conversation=_conversation(task.context_id),
                traceparent=headers.get("traceparent"), on_progress=on_progress)
        except GateDenied as exc:
            raise _a2a_error(exc) from None
        except Exception as exc:
            raise InternalError(message=f"the mesh call could not start: {exc}") from None
        self._running[task.id] = call
        try:
            if context.current_task is None:
                if await self._replied_with_message(call, reported, event_queue, task):
                    return
                await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            if not call.done() or not progress.empty():  # a skill that answered at once
                await updater.start_work(_agent_message(  # goes straight to its outcome
                    updater, f"accepted by the mesh gate: {target}.{skill}"))
            await self._follow(call, progress, updater)
        finally:
            self._running.pop(task.id, None)

    async def _replied_with_message(self, call: asyncio.Task[Any], reported: asyncio.Event,
                                    event_queue: EventQueue, task: Any) -> bool:
        """Hold a new task back for up to `MESSAGE_WINDOW`: if the skill answers in that time,
        before any progress or artifact, with `reply: "message"`, enqueue that bare Message
        (there is no task then) and say so."""
        waiter = asyncio.ensure_future(reported.wait())
        try:
            await asyncio.wait({call, waiter}, timeout=MESSAGE_WINDOW,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if (reported.is_set() or not call.done() or call.cancelled()
                or call.exception() is not None):
            return False
        try:
            answer = _answer(call.result())
        except ValueError:
            return False  # _follow fails the task with the reason
        if answer.reply != "message" or answer.state != TaskState.TASK_STATE_COMPLETED:
            return False
        await event_queue.enqueue_event(Message(
            role=Role.ROLE_AGENT, message_id=new_id(), context_id=task.context_id,
            parts=answer.parts))
        return True

    async def _follow(self, call: asyncio.Task[Any], progress: asyncio.Queue[dict[str, Any]],
                      updater: TaskUpdater) -> None:
        """Relay progress and artifacts while the call runs; then its outcome."""
        artifact_ids: dict[str, str] = {}  # chunks of one named artifact share its id
        while not call.done():
            getter = asyncio.ensure_future(progress.get())
            await asyncio.wait({call, getter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            await _relay(getter.result(), updater, artifact_ids)
        while not progress.empty():
            await _relay(progress.get_nowait(), updater, artifact_ids)
        try:
            result = call.result()
        except InputRequired as exc:
            await updater.requires_input(_agent_message(updater, exc.prompt))
            return
        except (SkillFailed, CallTimeout) as exc:
            await updater.failed(_agent_message(updater, f"{exc.code}: {exc.reason}"))
            return
        except GateDenied as exc:
            await updater.failed(_agent_message(updater, str(exc)))
            return
        except InterlinkError as exc:
            await updater.failed(_agent_message(updater, f"the mesh call failed: {exc}"))
            return
        try:
            answer = _answer(result)
        except ValueError as exc:
            await updater.failed(_agent_message(
                updater, f"the skill's {A2A_RESULT} answer is malformed: {exc}"))
            return
        if answer.reply == "artifact" and answer.parts:
            await updater.add_artifact(answer.parts, name="result")
        status = (updater.new_agent_message(answer.parts)
                  if answer.reply != "artifact" and answer.parts else None)
        if answer.state == TaskState.TASK_STATE_REJECTED:
            await updater.reject(status)
        else:
            await updater.complete(status)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Stop following the call (a late reply is dropped) and mark the task canceled."""
        call = self._running.pop(context.task_id or "", None)
        if call is not None:
            call.cancel()
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()

    async def _target(self, context: RequestContext) -> tuple[str, str]:
        """(agent, skill) for a message: `metadata.skill`, else the agent's only skill."""
        named = context.metadata.get("skill")
        if named is None and context.message is not None and context.message.metadata:
            named = MessageToDict(context.message.metadata).get("skill")
        if self.agent == "hub":
            agent, _, skill = str(named or "").partition(".")
            if not agent or not skill:
                raise InvalidParamsError(message="the hub endpoint needs metadata.skill = "
                                                 "'agent.skill'; the hub's card lists them")
            return agent, skill
        card = await self.edge.hub.registry.card(self.agent)
        skills = [s.id for s in card.skills] if card else []
        if named is not None:
            return self.agent, str(named)
        if len(skills) == 1:
            return self.agent, skills[0]
        raise InvalidParamsError(message=(
            f"{self.agent} has skills {skills or 'none (it never connected)'}: name one in "
            "the message's metadata.skill"))


# -- helpers ----------------------------------------------------------------------------------

def _expiring(connection: Connection) -> bool:
    """Whether an edge connection's credential ends within a tenth of its life (at most a
    minute): time to hand over to a fresh one."""
    credential = connection.credential.credential
    margin = min(60.0, (credential.expires - credential.issued) / 10)
    return time.time() >= credential.expires - margin


def _base_card(name: str, description: str, version: str, url: str,
               skills: list[dict[str, Any]], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "description": description or name, "version": version,
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": PROTOCOL_VERSION},
            {"url": url, "protocolBinding": "HTTP+JSON", "protocolVersion": PROTOCOL_VERSION},
            # 0.3 clients: a2a-sdk adds the 0.3 fields (url, protocolVersion, ...) to the
            # served card from the first 0.3 interface, and its compat layer serves them.
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": LEGACY_VERSION},
            {"url": url, "protocolBinding": "HTTP+JSON", "protocolVersion": LEGACY_VERSION}],
        "provider": {"organization": "Interlink mesh", "url": url.rsplit("/a2a/", 1)[0]},
        "capabilities": {"streaming": True, "pushNotifications": False, "extensions": [{
            "uri": SCHEMAS_EXTENSION, "required": False,
            "description": "Input and output JSON Schema of each skill, by skill id",
            "params": {"skills": schemas}}]},
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {
            "scheme": "Bearer", "bearerFormat": "JWT",
            "description": "issued by the mesh operator: `interlink token AGENT`"}}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
        "defaultInputModes": ["application/json", "text/plain"],
        "defaultOutputModes": ["application/json", "text/plain"],
        "skills": skills or [{"id": "none", "name": "none", "tags": ["offline"],
                              "description": "this agent has not connected yet"}],
    }


def _card_dict(agent: str, card: MeshCard | None, description: str,
               url: str) -> dict[str, Any]:
    skills, schemas = [], {}
    for skill in card.skills if card else []:
        skills.append({"id": skill.id, "name": skill.name or skill.id,
                       "description": skill.description or skill.id,
                       "tags": skill.tags or [agent]})
        schemas[skill.id] = {"input": skill.input_schema, "output": skill.output_schema}
    return _base_card(agent, description or (card.description if card else agent),
                      card.version if card else "0.0.0", url, skills, schemas)


def _a2a_error(exc: GateDenied) -> Exception:
    """A gate refusal as a standard A2A error with the structured detail."""
    detail = {"stage": exc.stage, "code": exc.code, "reason": exc.reason, "rule": exc.rule}
    text = f"refused by the mesh gate at {exc.stage} ({exc.code}): {exc.reason}"
    if exc.stage in ("decode", "validate"):
        return InvalidParamsError(message=text, data=detail)
    return InvalidRequestError(message=text, data=detail)


def _part(value: Any) -> Part:
    if isinstance(value, str):
        return Part(text=value)
    return ParseDict({"data": value}, Part())


@dataclass(frozen=True)
class _Answer:
    """How a skill's result is answered over A2A."""

    parts: list[Part]
    reply: str = "artifact"
    state: int = TaskState.TASK_STATE_COMPLETED


_REPLIES = ("artifact", "status", "message")
_STATES = {"completed": TaskState.TASK_STATE_COMPLETED, "rejected": TaskState.TASK_STATE_REJECTED}


def _answer(result: Any) -> _Answer:
    """The A2A answer for a skill's result: its value as one part, or what `{"$a2a": {...}}`
    spells out. Raises ValueError for a malformed `$a2a`."""
    if not (isinstance(result, dict) and len(result) == 1 and A2A_RESULT in result):
        return _Answer([] if result is None else [_part(result)])
    spec = result[A2A_RESULT]
    if not isinstance(spec, dict) or set(spec) - {"parts", "reply", "state"}:
        raise ValueError("it is an object with parts, reply and state")
    raw = spec.get("parts") or []
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise ValueError("parts is a list of A2A parts (objects)")
    try:
        parts = [ParseDict(p, Part()) for p in raw]
    except ParseError as exc:
        raise ValueError(f"a part is not an A2A part: {exc}") from exc
    reply = spec.get("reply", "artifact")
    if reply not in _REPLIES:
        raise ValueError(f"reply is one of {', '.join(_REPLIES)}, not {reply!r}")
    state = spec.get("state", "completed")
    if state not in _STATES:
        raise ValueError(f"state is one of {', '.join(_STATES)}, not {state!r}")
    return _Answer(parts, reply, _STATES[state])


def _agent_message(updater: TaskUpdater, text: str) -> Message:
    return updater.new_agent_message([Part(text=text)])


async def _relay(body: dict[str, Any], updater: TaskUpdater,
                 artifact_ids: dict[str, str]) -> None:
    artifact = body.get("artifact")
    if isinstance(artifact, dict):
        parts = [ParseDict(p, Part()) for p in artifact.get("parts") or []]
        name = str(artifact.get("name") or "output")
        if not artifact.get("append") or name not in artifact_ids:
            artifact_ids[name] = new_id()
        await updater.add_artifact(parts, artifact_id=artifact_ids[name], name=name,
                                   append=artifact.get("append"),
                                   last_chunk=artifact.get("lastChunk"))
    elif body.get("note"):
        await updater.update_status(TaskState.TASK_STATE_WORKING,
                                    _agent_message(updater, str(body["note"])))


def _timeout(context: RequestContext) -> float:
    value = context.metadata.get("timeout")
    return float(value) if isinstance(value, int | float) and value > 0 else 300.0


def _conversation(context_id: str) -> str:
    """A2A context ids are free-form; mesh conversation ids are letters, digits and _.:-."""
    cleaned = "".join(c if c.isalnum() or c in "_.:-" else "-" for c in context_id)[:128]
    return cleaned if cleaned and cleaned[0].isalnum() else f"a2a-{cleaned}"[:128]


def _base(scope: Scope) -> str:
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode() or "{}:{}".format(*scope.get("server", ("", "")))
    return f"{scope.get('scheme', 'http')}://{host}"


def _plain_json_client(headers: dict[bytes, bytes]) -> bool:
    """A REST client that speaks plain `application/json` (A2A 1.0.0's media type for the
    binding; 1.0.1 prefers `application/a2a+json`, which a2a-sdk sends): its body was
    application/json, or it accepts application/json but not application/a2a+json."""
    accept = headers.get(b"accept", b"").decode().lower()
    if A2A_JSON in accept:
        return False
    sent = headers.get(b"content-type", b"").decode().partition(";")[0].strip().lower()
    return sent == "application/json" or "application/json" in accept


def _json_media(content_type: str) -> bool:
    """Whether a request body of this Content-Type may be read as JSON (none given: a2a-sdk
    decides, as for a body-less `POST /tasks/{id}:cancel`)."""
    media = content_type.partition(";")[0].strip().lower()
    return not media or media == "application/json" or (
        media.startswith("application/") and media.endswith("+json"))


async def _unsupported_media(scope: Scope, receive: Receive, send: Send, content_type: str, *,
                             rpc: bool) -> None:
    """ContentTypeNotSupported in the binding's own form: a JSON-RPC error (-32005) for the
    JSON-RPC endpoint; for the REST binding a google.rpc.Status with HTTP 415, the status for a
    request body's media type (a2a-sdk answers 400 for the error's other use, parts' media
    types)."""
    error = ContentTypeNotSupportedError(
        message=f"Content-Type {content_type!r} is not supported: send application/json")
    if rpc:
        await _json(scope, receive, send, 200, build_error_response(None, error))
        return
    payload = build_rest_error_payload(error)
    payload["error"]["code"] = 415
    await _json(scope, receive, send, 415, payload)


_SAFE_PATH = re.compile(r"/[A-Za-z0-9\-_.:=@/]{0,512}")
"""Paths below an agent that a2a-sdk serves (methods, task ids): anything else is not found."""


async def _strict_body(receive: Receive, limit: int) -> tuple[bytes, str | None]:
    """The whole request body, and why it is refused (too large, or not strict JSON)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", f"the body is over {limit} bytes"
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    if body:
        try:
            strictjson.loads(body)
        except strictjson.BadJSON as exc:
            return body, str(exc)
    return body, None


def _replay(body: bytes, upstream: Receive) -> Receive:
    """The body already read, then the connection's own events (a streaming response listens
    for the client's disconnect)."""
    sent = False

    async def receive() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()
    return receive


async def _bad_request(scope: Scope, receive: Receive, send: Send, reason: str, *, rpc: bool,
                       status: int = 400) -> None:
    """A request refused before a2a-sdk sees it: a JSON-RPC parse error (-32700) for the
    JSON-RPC endpoint, else a google.rpc.Status with a 4xx."""
    if rpc:
        await _json(scope, receive, send, 200, {"jsonrpc": "2.0", "id": None, "error": {
            "code": -32700, "message": f"the request is not acceptable JSON: {reason}"}})
        return
    payload = build_rest_error_payload(InvalidRequestError(message=reason))
    payload["error"]["code"] = status
    await _json(scope, receive, send, status, payload)


async def _json(scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> None:
    await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


class A2ARouter:
    """ASGI middleware: `/a2a/...` requests go to the edge, everything else to the hub's app."""

    def __init__(self, app: ASGIApp, edge: Edge) -> None:
        self.app = app
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/a2a/"):
            await self.edge(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def card_json(card: AgentCard) -> dict[str, Any]:
    """A card as served: A2A 1.0 JSON with the 0.3 fields a2a-sdk adds for older clients."""
    return agent_card_to_dict(card)
