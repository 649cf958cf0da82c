"""The ACP edge: every mesh agent is an ACP (Agent Communication Protocol) agent under `/acp`,
for ACP clients such as acp-sdk's `Client(base_url="http://HUB/acp")`.

    GET  /acp/ping, /acp/agents[/{name}]      enrolled agents as ACP manifests (public, like
                                              A2A cards); metadata.skills carries the schemas
    POST /acp/runs                            {agent_name, input: [Message], mode, session_id?}
    GET  /acp/runs/{run_id}[/events]          the run, or its events so far
    POST /acp/runs/{run_id}[/cancel]          resume an awaiting run {await_resume, mode}; cancel

A run is a mesh call by the caller's identity (the bearer token's agent) over the A2A edge's
in-process connection for it, so the gate decides exactly as for SDK agents. `agent_name` is
`agent` (its only skill) or `agent.skill`: ACP's run request has no metadata a client can set,
so the skill rides in the name, written as grants write it. Input parts become the call's A2A
message (text/* a text part, application/json a data part holding the parsed value, base64 a
raw part, content_url a url part): one JSON part reaches the skill as its value, one text part
as the string. `ctx.message` has taskId = the run id and contextId = the session id, which is
also the mesh conversation. The output is one agent message: `ctx.artifact()` chunks as named
parts while the call runs, then the reply (a string as text/plain, else application/json);
progress notes are `generic` events {"note": ...}.

States: created; in-progress (the gate accepted); completed; failed (the skill raised or timed
out; error.code is the mesh code); awaiting (InputRequired: await_request holds the prompt, and
a resume calls the skill again with the resume message and the same taskId); cancelled. A gate
refusal answers the request itself: 403 (422 at decode/validate, 409 at commit) with ACP's
Error {code, message, data: {stage, code, reason, rule}}. Runs belong to their caller (another
token gets 404) and live in memory, the newest MAX_RUNS of them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import strictjson
from ..envelope import TRACEPARENT, new_id
from ..errors import CallError, GateDenied, InputRequired, InterlinkError
from .bearer import NotAuthenticated, acting_agent

if TYPE_CHECKING:
    from .a2a import Edge

MAX_RUNS = 1000
MODES = ("sync", "async", "stream")
TERMINAL = ("completed", "failed", "cancelled")
SETTLED = ("run.completed", "run.failed", "run.cancelled", "run.awaiting")
CONTENT_TYPES = ["application/json", "text/plain", "*/*"]

log = logging.getLogger("interlink.acp")


class Problem(Exception):
    """An ACP error answer: an HTTP status and ACP's Error {code, message, data}."""

    def __init__(self, status: int, code: str, message: str, data: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = JSONResponse({"code": code, "message": message, "data": data},
                                     status_code=status, headers=headers)


class Run:
    """One run: its ACP state, its events (what a stream replays), and the call it follows."""

    def __init__(self, owner: str, agent_name: str, target: tuple[str, str],
                 session_id: str) -> None:
        self.owner, self.target = owner, target
        self.state: dict[str, Any] = {
            "run_id": str(uuid.uuid4()), "agent_name": agent_name, "session_id": session_id,
            "status": "created", "await_request": None, "output": [], "error": None,
            "created_at": _now(), "finished_at": None}
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.task: asyncio.Future[None] | None = None
        self._open: dict[str, Any] | None = None  # the output message being written
        self.emit("run.created")

    @property
    def id(self) -> str:
        return str(self.state["run_id"])

    def emit(self, kind: str, status: str | None = None, **payload: Any) -> None:
        if status is not None:
            self.state["status"] = status
            if status in TERMINAL:
                self.state["finished_at"] = _now()
        self.events.append({"type": kind, **(payload or {"run": copy.deepcopy(self.state)})})
        self.changed.set()
        self.changed = asyncio.Event()

    def add_part(self, part: dict[str, Any]) -> None:
        if self._open is None:
            self._open = {"role": f"agent/{self.target[0]}", "parts": [],
                          "created_at": _now(), "completed_at": None}
            self.state["output"].append(self._open)
            self.emit("message.created", message=copy.deepcopy(self._open))
        self._open["parts"].append(part)
        self.emit("message.part", part=part)

    def close_message(self) -> None:
        if self._open is not None:
            self._open["completed_at"] = _now()
            self.emit("message.completed", message=copy.deepcopy(self._open))
            self._open = None

    def relay(self, body: dict[str, Any]) -> None:
        """A progress frame of the call: artifact chunks become parts, notes generic events."""
        artifact = body.get("artifact")
        if isinstance(artifact, dict):
            for part in artifact.get("parts") or []:
                if isinstance(part, dict):
                    self.add_part(_acp_part(part, str(artifact.get("name") or "output")))
        elif body.get("note"):
            self.emit("generic", generic={"note": str(body["note"])})

    async def settled(self) -> None:
        while self.state["status"] not in (*TERMINAL, "awaiting"):
            await self.changed.wait()

    async def stream(self, start: int) -> AsyncIterator[str]:
        """Server-sent events from event `start` until the run ends or awaits input."""
        while True:
            changed = self.changed
            while start < len(self.events):
                event = self.events[start]
                start += 1
                yield f"data: {json.dumps(event)}\n\n"
                if event["type"] in SETTLED:
                    return
            await changed.wait()


class AcpEdge:
    """Serves `/acp/...` (mount it there); calls go through `edge`'s connections."""

    def __init__(self, edge: Edge) -> None:
        self.edge, self.hub = edge, edge.hub
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.app = Starlette(routes=[
            Route("/ping", lambda _: JSONResponse({})),
            Route("/agents", self.agents),
            Route("/agents/{name}", self.agent),
            Route("/runs", self.create, methods=["POST"]),
            Route("/runs/{run_id}", self.read),
            Route("/runs/{run_id}", self.resume, methods=["POST"]),
            Route("/runs/{run_id}/events", self.events),
            Route("/runs/{run_id}/cancel", self.cancel, methods=["POST"]),
        ], exception_handlers={Problem: _problem, HTTPException: _http_problem})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        tasks = [run.task for run in self.runs.values() if run.task and not run.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def agents(self, request: Request) -> JSONResponse:
        statuses = await self.hub.registry.statuses(self.hub.policy.current())
        return JSONResponse({"agents": [_manifest(s) for s in statuses]})

    async def agent(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        for status in await self.hub.registry.statuses(self.hub.policy.current()):
            if status.name == name:
                return JSONResponse(_manifest(status))
        raise Problem(404, "not_found", f"there is no agent {name!r} on this mesh")

    async def create(self, request: Request) -> Response:
        caller = self._caller(request)
        body = await _body(request)
        name, mode, messages = body.get("agent_name"), body.get("mode") or "sync", body.get("input")
        if not isinstance(name, str) or mode not in MODES or not isinstance(messages, list):
            raise Problem(422, "invalid_input", "a run needs agent_name, input (a list of "
                                                "messages) and mode sync, async or stream")
        given = body.get("session")
        if given is not None and not isinstance(given, dict):
            raise Problem(422, "invalid_input", "session must be an object with an id")
        session = body.get("session_id") or (given or {}).get("id")
        try:
            session = str(uuid.UUID(str(session))) if session else str(uuid.uuid4())
        except ValueError:
            raise Problem(422, "invalid_input", "session_id must be a UUID") from None
        run = Run(caller, name, await self._target(name), session)
        await self._call(run, messages, request)
        self.runs[run.id] = run
        if len(self.runs) > MAX_RUNS:  # forget the oldest finished run (else the oldest)
            old = next((k for k, r in self.runs.items() if r.state["status"] in TERMINAL), None)
            self.runs.pop(old or next(iter(self.runs)))
        return await _answer(run, mode, 0)

    async def read(self, request: Request) -> JSONResponse:
        return JSONResponse(self._owned(request).state)

    async def events(self, request: Request) -> JSONResponse:
        return JSONResponse({"events": self._owned(request).events})

    async def resume(self, request: Request) -> Response:
        run = self._owned(request)
        body = await _body(request)
        resume, mode = body.get("await_resume") or {}, body.get("mode") or "sync"
        if run.state["status"] != "awaiting":
            raise Problem(409, "invalid_input",
                          f"run {run.id} is {run.state['status']}, not awaiting input")
        if not isinstance(resume, dict) or not isinstance(resume.get("message"), dict) \
                or mode not in MODES:
            raise Problem(422, "invalid_input", "a resume needs await_resume {type: message, "
                                                "message} and mode sync, async or stream")
        start, run.state["status"] = len(run.events), "in-progress"  # one resume at a time
        try:
            await self._call(run, [resume["message"]], request)
        except Problem:
            run.state["status"] = "awaiting"
            raise
        return await _answer(run, mode, start)

    async def cancel(self, request: Request) -> JSONResponse:
        run = self._owned(request)
        if run.state["status"] in TERMINAL:
            raise Problem(409, "invalid_input", f"run {run.id} is already {run.state['status']}")
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.wait({run.task})
        if run.state["status"] not in TERMINAL:
            run.close_message()
            run.emit("run.cancelled", "cancelled")
        return JSONResponse(run.state, status_code=202)

    async def _call(self, run: Run, messages: list[Any], request: Request) -> None:
        """Make the run's mesh call; return once the gate accepted it (a refusal raises)."""
        agent, skill = run.target
        message = {"messageId": new_id(), "role": "ROLE_USER", "parts": _a2a_parts(messages),
                   "taskId": run.id, "contextId": run.state["session_id"]}
        incoming = request.headers.get("traceparent", "")
        try:
            call = await self.edge.start_call(
                run.owner, agent, skill, message=message, call_id=new_id(),
                conversation=run.state["session_id"],
                timeout=self.hub.policy.current().hub.call_timeout_seconds,
                traceparent=incoming if TRACEPARENT.fullmatch(incoming) else None,
                on_progress=run.relay)
        except Exception as exc:
            if isinstance(exc, GateDenied):
                status = {"decode": 422, "validate": 422, "commit": 409}.get(exc.stage, 403)
                raise Problem(status, exc.code, f"refused by the mesh gate: {exc}",
                              exc.to_dict()) from None
            raise Problem(502, "server_error",
                          f"the mesh call could not start: {exc}") from None
        run.state["await_request"] = None
        run.emit("run.in-progress", "in-progress")
        run.task = asyncio.ensure_future(self._follow(run, call))

    async def _follow(self, run: Run, call: asyncio.Future[Any]) -> None:
        """The call's outcome as the run's end: completed, failed, or awaiting input."""
        try:
            result = await call
        except InputRequired as exc:
            run.close_message()
            run.state["await_request"] = {"type": "message", "message": {
                "role": f"agent/{run.target[0]}", "parts": [_acp_part({"text": exc.prompt})],
                "created_at": _now(), "completed_at": _now()}}
            run.emit("run.awaiting", "awaiting")
            return
        except (GateDenied, CallError) as exc:
            error: dict[str, Any] = {"code": exc.code, "message": str(exc),
                                     "data": exc.to_dict()}
        except InterlinkError as exc:
            error = {"code": "server_error", "message": f"the mesh call failed: {exc}",
                     "data": None}
        else:
            run.add_part(_acp_part({"text": result} if isinstance(result, str)
                                   else {"data": result}))
            run.close_message()
            run.emit("run.completed", "completed")
            return
        run.close_message()
        run.state["error"] = error
        run.emit("run.failed", "failed")

    def _caller(self, request: Request) -> str:
        """The agent the request's bearer token speaks for."""
        try:
            return acting_agent(self.hub, request.headers.get("authorization", ""))
        except NotAuthenticated as why:
            raise Problem(401, "unauthenticated", f"{why}: send `Authorization: Bearer "
                          "<token>`; an operator issues one with `interlink token AGENT`",
                          headers={"www-authenticate": "Bearer"}) from None

    def _owned(self, request: Request) -> Run:
        caller = self._caller(request)
        run = self.runs.get(request.path_params["run_id"])
        if run is None or run.owner != caller:
            raise Problem(404, "not_found", f"no run {request.path_params['run_id']} of {caller}")
        return run

    async def _target(self, name: str) -> tuple[str, str]:
        """(agent, skill) for an agent_name: `agent.skill`, else the agent's only skill."""
        agent, _, skill = name.partition(".")
        if not self.hub.policy.current().enrolled(agent):
            raise Problem(404, "not_found", f"there is no agent {agent!r} on this mesh "
                                            "(GET /acp/agents lists them)")
        if skill:
            return agent, skill
        card = await self.hub.registry.card(agent)
        skills = [s.id for s in card.skills] if card else []
        if len(skills) == 1:
            return agent, skills[0]
        raise Problem(422, "invalid_input", f"{agent} has skills "
                      f"{skills or 'none (it never connected)'}: run agent_name '{agent}.SKILL'")


# -- helpers ----------------------------------------------------------------------------------

def _manifest(status: Any) -> dict[str, Any]:
    skills = status.card.skills if status.card else []
    return {
        "name": status.name, "description": status.description or f"mesh agent {status.name}",
        "metadata": {
            "tags": ["interlink"], "capabilities": [
                {"name": s.id, "description": s.description or s.id} for s in skills],
            "skills": [s.model_dump() for s in skills], "connected": status.connected,
            "documentation": f"run agent_name '{status.name}' for its only skill, or "
                             f"'{status.name}.SKILL'; send a bearer token (`interlink token`)"},
        "input_content_types": CONTENT_TYPES, "output_content_types": CONTENT_TYPES}


def _a2a_parts(messages: list[Any]) -> list[dict[str, Any]]:
    """ACP message parts as A2A parts (the shape of a mesh call's message)."""
    parts = []
    for message in messages:
        given = message.get("parts") if isinstance(message, dict) else None
        for part in given if isinstance(given, list) else [None]:
            if not isinstance(part, dict):
                raise Problem(422, "invalid_input", "each input message needs a list of parts")
            for field in ("content", "content_type", "content_url", "content_encoding", "name"):
                if part.get(field) is not None and not isinstance(part[field], str):
                    raise Problem(422, "invalid_input", f"a part's {field} must be a string")
            ctype = part.get("content_type") or "text/plain"
            extra = {"mediaType": ctype, **({"filename": part["name"]} if part.get("name") else {})}
            content = part.get("content") or ""
            if part.get("content_url"):
                parts.append({"url": part["content_url"], **extra})
            elif part.get("content_encoding") == "base64":
                parts.append({"raw": content, **extra})
            elif ctype == "application/json" or ctype.endswith("+json"):
                try:
                    parts.append({"data": strictjson.loads(content), **extra})
                except strictjson.BadJSON as exc:
                    raise Problem(422, "invalid_input", f"a part says {ctype} but its content "
                                  f"is not acceptable JSON: {exc}") from None
            else:
                parts.append({"text": content, **extra})
    if not parts:
        raise Problem(422, "invalid_input", "the run's input has no message parts")
    return parts


def _acp_part(part: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """An A2A part (a reply, an artifact chunk) as an ACP message part."""
    out: dict[str, Any] = {"name": name or part.get("filename")}
    if "text" in part:
        return {**out, "content_type": part.get("mediaType") or "text/plain",
                "content": part["text"]}
    if "raw" in part:
        return {**out, "content_type": part.get("mediaType") or "application/octet-stream",
                "content": part["raw"], "content_encoding": "base64"}
    if "url" in part:
        return {**out, "content_type": part.get("mediaType"), "content_url": part["url"]}
    return {**out, "content_type": "application/json", "content": json.dumps(part.get("data"))}


async def _answer(run: Run, mode: str, start: int) -> Response:
    headers = {"run-id": run.id}
    if mode == "stream":
        return StreamingResponse(run.stream(start), media_type="text/event-stream",
                                 headers=headers)
    if mode == "sync":
        await run.settled()
        return JSONResponse(run.state, headers=headers)
    return JSONResponse(run.state, status_code=202, headers=headers)


async def _body(request: Request) -> dict[str, Any]:
    """The JSON body (acp-sdk's client sends it without a content type)."""
    try:
        body = strictjson.loads(await request.body() or b"{}")
    except strictjson.BadJSON as exc:
        raise Problem(422, "invalid_input", f"the request body is not acceptable JSON: {exc}"
                      ) from None
    if not isinstance(body, dict):
        raise Problem(422, "invalid_input", "the request body must be a JSON object")
    return body


async def _problem(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Problem):
        return exc.response
    log.exception("ACP request %s %s failed", request.method, request.url.path, exc_info=exc)
    return Response(status_code=500)


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_input"
    return Problem(exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}",
                   headers=dict(exc.headers or {})).response


def _now() -> str:
    return datetime.now(UTC).isoformat()
