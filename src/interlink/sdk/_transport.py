"""What a `Connection` runs over: a `Socket` of text frames to one hub, opened by a
`Transport`. The WebSocket (the default) and the in-process socket the hub's protocol edges use
(`interlink.edges.local`) both implement it, and both speak only the SDK's own errors: a closed
socket raises `ConnectionLost`, whatever library is underneath."""

from __future__ import annotations

import asyncio
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


def reason(exc: BaseException) -> str:
    """A connection failure in words, not a Python repr."""
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
    async def open(cls, url: str) -> WebSocket:
        """Connect; ConnectionLost naming why not (refused, bad URL, not a WebSocket)."""
        try:
            ws = await ws_connect(url, max_size=None, compression=None, ping_interval=10.0,
                                  ping_timeout=20.0)
        except (OSError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
            raise ConnectionLost(reason(exc)) from exc
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
