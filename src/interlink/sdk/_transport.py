"""What a `Connection` runs over: a `Socket` of text frames to one hub, opened by a
`Transport`. The WebSocket (the default) and the in-process socket the hub's protocol edges use
(`interlink.edges.local`) both implement it, and both speak only the SDK's own errors: a closed
socket raises `ConnectionLost`, whatever library is underneath."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from ..errors import ConnectionLost


class Socket(Protocol):
    """One open connection to a hub."""

    @property
    def close_code(self) -> int | None:
        """Why the hub closed it (None while open): e.g. 4000, replaced by a newer one."""

    @property
    def close_reason(self) -> str: ...

    async def send(self, text: str) -> None:
        """Send one frame; ConnectionLost once the socket is closed."""

    async def recv(self) -> str:
        """The next frame; ConnectionLost once the socket is closed."""

    def __aiter__(self) -> AsyncIterator[str]:
        """Every frame until the socket closes (then the iteration ends)."""

    async def aclose(self) -> None:
        """Close it (idempotent)."""


Transport = Callable[[], Awaitable[Socket]]
"""Opens the socket under a connection: by default a WebSocket to the hub's URL; the hub's
protocol edges pass an in-process one, so the same client code and the same gate serve every
way in."""


def reason(exc: BaseException, url: str = "") -> str:
    """A connection failure in words, not a Python repr."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or str(exc)
        if "expired" in why:
            return f"the hub's certificate has expired ({why})"
        return (f"the hub's certificate is not trusted ({why}): give the CA that signed it "
                "(tls_ca=, $INTERLINK_CA, or hub.tls.ca in mesh.yaml)")
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with the hub failed ({exc.reason or exc})"
    if url.startswith("ws://") and isinstance(exc, (websockets.InvalidMessage,
                                                     websockets.InvalidHandshake)):
        return "no WebSocket answer: does the hub serve TLS? then use wss://"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class WebSocket:
    """A `Socket` over a `websockets` client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, url: str, *, tls_ca: str | None = None) -> WebSocket:
        """Connect (a `wss://` hub is checked against `tls_ca`, else the system's trust
        store); ConnectionLost naming why not (refused, bad URL, an untrusted or expired
        certificate, a plaintext client at a TLS hub, not a WebSocket)."""
        context = None
        if url.startswith("wss://"):
            context = ssl.create_default_context(cafile=tls_ca)
        try:
            ws = await ws_connect(url, max_size=None, compression=None, ping_interval=10.0,
                                  ping_timeout=20.0, ssl=context)
        except (OSError, websockets.InvalidURI, websockets.InvalidHandshake,
                websockets.InvalidMessage) as exc:
            raise ConnectionLost(reason(exc, url)) from exc
        return cls(ws)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"the connection to the hub closed ({exc})") from exc

    async def recv(self) -> str:
        try:
            frame = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"the connection to the hub closed ({exc})") from exc
        return frame if isinstance(frame, str) else frame.decode()

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for frame in self._ws:
                yield frame if isinstance(frame, str) else frame.decode()
        except websockets.ConnectionClosed:
            return

    async def aclose(self) -> None:
        await self._ws.close()
