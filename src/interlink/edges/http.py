"""The hub's HTTP surface: the WebSocket endpoint for agents, the A2A edge (`/a2a/{agent}`
and the hub's card), the ACP edge (`/acp`), health, and the hub's identity."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..home import MeshHome
from ..hub import Hub
from ..policy import Policy
from ..store import Claim
from .a2a import A2ARouter, Edge, card_json
from .a2a_remote import RemoteAgents
from .acp import AcpEdge
from .admin import admin_routes
from .console import console_routes
from .openapi import SPEC
from .ws import serve_connection

log = logging.getLogger("interlink.hub")


class Durable:
    """Nothing leaves through the HTTP server (a response, a WebSocket frame) before what the
    hub wrote is durable: the store lets writes share a commit (`Hub.durable`), so every
    message out waits for it first. Costs nothing when no write is waiting."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def durable_send(message: Message) -> None:
            await self.hub.durable()
            await send(message)

        await self.app(scope, receive, durable_send)


def create_app(home: MeshHome, *, store_url: str | None = None,
               full_gate: bool = True, claim: Claim | None = None,
               accept_audit_gap: bool = False, where: str = "",
               standby: bool = False) -> Starlette:
    hub = Hub(home, store_url=store_url, full_gate=full_gate, claim=claim,
              accept_audit_gap=accept_audit_gap, where=where, standby=standby)
    a2a = Edge(hub)
    acp = AcpEdge(a2a)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub:
            remotes = RemoteAgents(hub)  # the edges live here: the hub knows none of them
            app.state.remotes = remotes

            def follow(old: Policy, new: Policy) -> None:
                remotes.sync(new)

            remotes.sync(hub.policy.current())
            hub.policy.listeners.append(follow)
            if hub.where:
                log.info("console: %s/console#token=%s (this run's login)",
                            hub.where.replace("wss://", "https://").replace("ws://", "http://")
                            .removesuffix("/ws"), hub.console_token)
            try:
                yield
            finally:
                hub.policy.listeners.remove(follow)
                await remotes.aclose()
                await acp.aclose()
                await a2a.aclose()

    async def websocket(ws: WebSocket) -> None:
        await serve_connection(hub, ws)

    async def health(request: Request) -> JSONResponse:
        problem = hub.store.health()
        body = {"status": "ok" if problem is None else "store_unreachable", "hub": hub.key.id,
                "policy": hub.policy.digest, "connections": len(hub.registry.by_id),
                "tasks": len(asyncio.all_tasks()), "store": problem or "ok"}
        return JSONResponse(body, status_code=200 if problem is None else 503)

    async def hub_card(request: Request) -> JSONResponse:
        base = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse(card_json(await a2a.hub_card(base)),
                            headers={"cache-control": "max-age=60"})

    async def identity(request: Request) -> JSONResponse:
        return JSONResponse({"hub": hub.key.id, "public_key": hub.key.public_b64,
                             "websocket": "/ws", "gate": list(hub.gate.names)})

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(SPEC)

    app = Starlette(routes=[
        WebSocketRoute("/ws", websocket),
        Route("/openapi.json", openapi),
        *admin_routes(hub),
        *console_routes(hub),
        Route("/healthz", health),
        Route("/.well-known/interlink-hub.json", identity),
        Route("/.well-known/agent-card.json", hub_card),
        Mount("/acp", app=acp),
    ], lifespan=lifespan, middleware=[Middleware(Durable, hub=hub),
                                      Middleware(A2ARouter, edge=a2a)])
    app.state.hub = hub
    app.state.a2a = a2a
    return app
