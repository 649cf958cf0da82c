"""The SDK's WebSocket protocol: one connection per agent, JSON frames.

    hub → agent   {"op": "challenge", "challenge": "<hex>", "hub": "<hub id>", ...}
    agent → hub   an envelope (the first one a signed `hello` answering the challenge)
    hub → agent   {"op": "accepted", "id": ..., "kind": ..., ...}   after commit
                  {"op": "refused", "id": ..., "error": {stage, code, reason, rule}}
                  {"op": "deliver", "env": <envelope as signed>, "origin": <sender credential>}
                  {"op": "failed", "id": <call id>, "error": {...}}   a call ended without reply

The edge only moves frames: every envelope goes to the hub's gate, which decides.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import codec, frames
from ..envelope import new_id
from ..gate import Session
from ..hub import Hub

log = logging.getLogger("interlink.ws")


class Pace:
    """Backpressure before the gate: a connection is read no faster than its agent's rate
    (`agents.X.rate`, else `hub.rate_per_agent`, with the hub's burst). A sender that goes
    faster waits in its own socket buffer instead of costing the hub a signature check and an
    audit record for each refusal, so a flooding agent slows itself, not its neighbours. The
    guard's rate limit stays the rule (for edges that do not pace); this only keeps an honest
    SDK from reaching it."""

    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub = hub
        self.session = session
        self.tokens = float(hub.settings.rate_burst)
        self.last = time.monotonic()

    async def wait(self) -> None:
        settings = self.hub.settings
        grants = self.hub.policy.policy.agents.get(self.session.agent or "")
        rate = grants.rate if grants is not None and grants.rate else settings.rate_per_agent
        if rate is None:
            return  # no cap set for this agent: read it as fast as it sends
        burst = max(1.0, rate if grants is not None and grants.rate else settings.rate_burst)
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens < 1.0:
            await asyncio.sleep((1.0 - self.tokens) / rate)
            self.tokens, self.last = 1.0, time.monotonic()
        self.tokens -= 1.0


async def serve_connection(hub: Hub, websocket: WebSocket) -> None:
    await websocket.accept()
    lock = asyncio.Lock()

    async def send(frame: frames.Frame) -> None:
        text = codec.dumps_text(frame)
        async with lock:
            await websocket.send_text(text)

    async def close(code: int, reason: str) -> None:
        await websocket.close(code, reason)

    client = websocket.client
    session = Session(id=new_id(), remote=f"{client.host}:{client.port}" if client else "?",
                      challenge=secrets.token_hex(16), send=send, close=close)
    try:
        await send(frames.challenge(session.challenge, hub.key.id,
                                    hub.settings.max_envelope_bytes))
        pace = Pace(hub, session)
        while not session.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("bytes")
            if raw is None:
                raw = (message.get("text") or "").encode()
            await pace.wait()
            await hub.handle(raw, session)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection %s failed", session.id)
    finally:
        await hub.disconnected(session)
