"""The operator's HTTP endpoints (`/admin/...`): acts that belong to whoever runs the mesh, not
to any agent. A request carries a short-lived bearer token signed by the hub key with audience
`interlink-admin` (the CLI mints one from the mesh home, where the hub key lives); every act is
an audit record naming who did it and why.

    POST /admin/agents/{agent}/clear-taint   {"by": "alice", "reason": "..."}
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import strictjson
from ..envelope import valid_agent_name
from ..errors import ConfigError
from ..hub import Hub
from ..identity import ADMIN_AUDIENCE, check_token

MAX_BODY = 16 * 1024


def admin_routes(hub: Hub) -> list[Route]:
    async def clear_taint(request: Request) -> JSONResponse:
        refused = authenticate(hub, request)
        if refused is not None:
            return refused
        agent = request.path_params["agent"]
        data = await json_object(request, "{by, reason}")
        if isinstance(data, JSONResponse):
            return data
        if not valid_agent_name(agent):
            return _error(400, "bad_request", "the body must be a JSON object: {by, reason}, "
                          "and the path must name an agent")
        try:
            before = await hub.clear_taint(agent, by=f"operator:{str(data.get('by') or '?')[:100]}",
                                           reason=str(data.get("reason") or ""))
        except ConfigError as exc:
            return _error(404, "unknown_agent", str(exc))
        return JSONResponse({"agent": agent, "before": before.to_dict()})

    return [Route("/admin/agents/{agent}/clear-taint", clear_taint, methods=["POST"])]


async def json_object(request: Request, shape: str) -> dict[str, Any] | JSONResponse:
    """A request's body as a JSON object (at most `MAX_BODY` bytes, strict JSON), or the
    refusal saying what is wrong and what `shape` to send."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, "too_large", f"the request is over {MAX_BODY} bytes")
    try:
        data: Any = strictjson.loads(body or b"{}")
    except strictjson.BadJSON as exc:
        return _error(400, "bad_request", f"the body must be JSON {shape}: {exc}")
    if not isinstance(data, dict):
        return _error(400, "bad_request", f"the body must be a JSON object: {shape}")
    return data


def authenticate(hub: Hub, request: Request) -> JSONResponse | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return _error(401, "unauthenticated", "an operator token is needed (the CLI sends one "
                      "from the mesh home)")
    try:
        subject = check_token(header[7:].strip(), hub.key.public, hub.key.id,
                              audience=ADMIN_AUDIENCE)
    except ConfigError as exc:
        return _error(401, "bad_token", str(exc))
    if subject != "operator":
        return _error(403, "not_operator", "this token is not an operator's")
    return None


def _error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "reason": reason}}, status_code=status)
