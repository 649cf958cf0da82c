"""The web console at `/console`: what the mesh is doing, for people. A page and its script
ship in the package (`interlink/console/`: no build step, no network at run time); the page
reads JSON from `/console/api/...`:

    GET  /console/api/overview                 agents, links between them, held calls,
                                               topics and consumers, memory, audit status
    GET  /console/api/feed?after=SEQ           spans of the crossings since SEQ (live feed)
    GET  /console/api/conversation/{id}        one conversation's spans (its diagram)
    POST /console/api/held/{call}              {"decision": "approve"|"refuse", "reason"}

Every API request carries `Authorization: Bearer TOKEN`: the login token this run of the hub
logged at start (`/console#token=…`), or an operator token (`interlink` mints them from the
mesh home). A decision is audited naming who made it. The page builds its DOM with
`textContent` only: names, reasons and ids from the mesh are never parsed as HTML.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..envelope import ENVELOPE_ID
from ..hub import Hub
from .admin import authenticate, json_object

ASSETS = Path(__file__).resolve().parent.parent / "console"
FEED_LIMIT = 200


def console_routes(hub: Hub) -> list[Route]:
    async def page(request: Request) -> Response:
        return FileResponse(ASSETS / "index.html", headers=_NO_STORE)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("console.js", "console.css"):
            return _error(404, "not_found", f"the console has no asset {name!r}")
        return FileResponse(ASSETS / name, headers=_NO_STORE)

    async def overview(request: Request) -> Response:
        who = _who(hub, request)
        if isinstance(who, Response):
            return who
        return JSONResponse(await _overview(hub))

    async def feed(request: Request) -> Response:
        who = _who(hub, request)
        if isinstance(who, Response):
            return who
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return _error(400, "bad_request", "`after` is a log sequence (an integer)")
        if hub.traces is None:
            return JSONResponse({"next": 0, "spans": [], "tracing": False})
        log_ = hub.traces.log
        last = await log_.last_seq()
        start = after + 1 if after > 0 else max(1, last - 20)
        messages = await log_.read(start, limit=FEED_LIMIT)
        from ..services.traces import spans_of
        return JSONResponse({"next": messages[-1].seq if messages else max(after, start - 1),
                             "spans": spans_of(messages), "tracing": True})

    async def conversation(request: Request) -> Response:
        who = _who(hub, request)
        if isinstance(who, Response):
            return who
        conversation_id = request.path_params["conversation"]
        if not ENVELOPE_ID.fullmatch(conversation_id):
            return _error(400, "bad_request", "that is not a conversation id")
        from ..services.traces import conversation_spans
        spans = await conversation_spans(hub.traces.log, conversation_id) if hub.traces else []
        if not spans:
            return _error(404, "unknown_conversation",
                          f"no spans for conversation {conversation_id}")
        return JSONResponse({"conversation": conversation_id, "spans": spans})

    async def decide(request: Request) -> Response:
        who = _who(hub, request)
        if isinstance(who, Response):
            return who
        call_id = request.path_params["call"]
        data = await json_object(request, '{"decision": "approve" | "refuse", "reason"}')
        if isinstance(data, JSONResponse):
            return data
        if data.get("decision") not in ("approve", "refuse") or not ENVELOPE_ID.fullmatch(
                call_id):
            return _error(400, "bad_request",
                          'send {"decision": "approve" | "refuse", "reason": "..."}')
        problem = await hub.decide_held(call_id, data["decision"] == "approve", by=who,
                                        reason=str(data.get("reason") or ""))
        if problem is not None:
            return _error(409, "not_held", problem)
        return JSONResponse({"call": call_id, "decision": data["decision"], "by": who})

    return [Route("/console", page), Route("/console/", page),
            Route("/console/assets/{name}", asset),
            Route("/console/api/overview", overview),
            Route("/console/api/feed", feed),
            Route("/console/api/conversation/{conversation}", conversation),
            Route("/console/api/held/{call}", decide, methods=["POST"])]


_NO_STORE = {"cache-control": "no-store", "x-content-type-options": "nosniff",
             "content-security-policy": "default-src 'self'; script-src 'self'; "
                                        "style-src 'self'; img-src 'self' data:; "
                                        "frame-ancestors 'none'"}


def _who(hub: Hub, request: Request) -> str | Response:
    """Who is asking (for the audit), or the refusal."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return _error(401, "unauthenticated", "log in: open the console URL the hub printed at "
                      "start (/console#token=…), or send an operator token")
    if hmac.compare_digest(header[7:].strip().encode(), hub.console_token.encode()):
        return "console"
    refused = authenticate(hub, request)  # else an operator's token, as /admin takes
    return refused if refused is not None else "operator"


def _error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "reason": reason}}, status_code=status,
                        headers=_NO_STORE)


async def _overview(hub: Hub) -> dict[str, Any]:
    policy = hub.policy.current()
    statuses = await hub.registry.statuses(policy)
    agents = [{"name": s.name, "connected": s.connected, "breaker": s.breaker,
               "suspended": s.suspended, "description": s.description,
               "skills": [k.id for k in s.card.skills] if s.card else []}
              for s in statuses]
    links: dict[tuple[str, str], dict[str, int]] = {}
    refused: list[dict[str, Any]] = []
    if hub.traces is not None:
        log_ = hub.traces.log
        last = await log_.last_seq()
        from ..services.traces import spans_of
        recent = spans_of(await log_.read(max(1, last - 300), limit=400))
        for span in recent:  # the recent traffic, however old: a quiet mesh still shows it
            a = span.get("attributes") or {}
            if a.get("interlink.kind") != "call":
                continue
            key = (str(a.get("interlink.sender")),
                   str(a.get("interlink.target", "")).partition(".")[0])
            link = links.setdefault(key, {"calls": 0, "refused": 0})
            link["calls"] += 1
            if a.get("interlink.decision") == "refused":
                link["refused"] += 1
        refused = [s for s in recent if (s.get("attributes") or {}).get(
            "interlink.decision") == "refused"][-30:]
    held = [{"call": r.id, "caller": r.caller, "target": f"{r.target}.{r.skill}",
             "rule": (r.held or {}).get("rule"), "conversation": r.conversation,
             "expires_in": max(0.0, r.deadline - time.time())} for r in await hub.calls.held()]
    counts = await hub.events.log.subjects()
    consumers = [{"name": c.name, "filter": c.filter, "lag": c.num_pending,
                  "unacked": c.ack_pending, "dead": c.dead_lettered}
                 for c in await hub.events.log.consumers()]
    namespaces: dict[str, int] = {}
    for stored in await hub.memory.kv.keys():
        namespace = stored.partition("/")[0]
        namespaces[namespace] = namespaces.get(namespace, 0) + 1
    return {"hub": hub.key.id, "agents": agents,
            "links": [{"from": a, "to": b, **n} for (a, b), n in sorted(links.items())],
            "refused": refused, "held": held,
            "topics": [{"topic": t, "events": n} for t, n in sorted(counts.items())
                       if not t.startswith("$")],
            "consumers": consumers,
            "memory": [{"namespace": n, "keys": k} for n, k in sorted(namespaces.items())],
            "audit": {"records": hub.audit.records, "unsealed": hub.audit.unsealed,
                      **await _verified(hub)},
            "tracing": hub.traces is not None}



_VERIFIED: dict[int, tuple[float, dict[str, Any]]] = {}
VERIFY_EVERY = 30.0
"""The chain is replayed whole to verify it: at most this often, the last result shown."""


async def _verified(hub: Hub) -> dict[str, Any]:
    from ..services.audit import verify_chain
    known = _VERIFIED.get(id(hub))
    if known is not None and time.monotonic() - known[0] < VERIFY_EVERY:
        return known[1]
    report = await verify_chain(hub.audit.log, hub.key.public,
                                head_path=hub.home.audit_head_path)
    result = {"verified": report.ok, "problem": report.problems[0] if report.problems else None,
              "checked": time.time()}
    _VERIFIED[id(hub)] = (time.monotonic(), result)
    return result
