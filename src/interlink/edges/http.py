"""The hub's HTTP surface: the WebSocket endpoint for agents, health, and the hub's identity."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..home import MeshHome
from ..hub import Hub
from .ws import serve_connection


def create_app(home: MeshHome, *, store_url: str | None = None) -> Starlette:
    hub = Hub(home, store_url=store_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub:
            yield

    async def websocket(ws: WebSocket) -> None:
        await serve_connection(hub, ws)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "hub": hub.key.id})

    async def identity(request: Request) -> JSONResponse:
        return JSONResponse({"hub": hub.key.id, "public_key": hub.key.public_b64,
                             "websocket": "/ws", "gate": list(hub.gate.names)})

    app = Starlette(routes=[
        WebSocketRoute("/ws", websocket),
        Route("/healthz", health),
        Route("/.well-known/interlink-hub.json", identity),
    ], lifespan=lifespan)
    app.state.hub = hub
    return app
