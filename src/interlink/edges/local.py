"""An in-process connection to the hub, for the hub's own protocol edges (A2A, ACP).

An edge speaks for an outside caller (authenticated by a bearer token) or for a remote agent.
It does so as an ordinary SDK `Connection` whose socket is this in-process pair instead of a
WebSocket: the edge holds a short-lived credential the hub issued for that agent's identity,
signs every envelope with it, and the hub's gate treats it exactly like any other connection
(authenticate, authorize, validate, commit, deliver, observe). Nothing is special-cased.

    connection = Connection(edge_credential(hub, "ideator"), transport=local_transport(hub))
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from .. import codec, frames
from ..envelope import new_id
from ..errors import ConnectionLost
from ..gate import Session
from ..identity import CredentialFile, new_agent_key
from ..logs import logged
from ..sdk._transport import Transport

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("interlink.local")

EDGE_CREDENTIAL_DAYS = 1 / 24
"""Edge credentials live an hour; edges ask for a new one per connection."""


def edge_credential(hub: Hub, agent: str) -> CredentialFile:
    """A fresh key pair and a short-lived hub-signed credential for `agent`, held in memory by
    an edge that acts for it (never written to disk)."""
    private, private_b64 = new_agent_key()
    credential = hub.key.issue(agent, private.public_key(), days=EDGE_CREDENTIAL_DAYS)
    return CredentialFile(credential=credential, private_key=private_b64,
                          hub_url="local:", hub_public_key=hub.key.public_b64)


class LocalSocket:
    """The client's end of an in-process connection: a `Socket` (`sdk/_transport.py`) whose
    frames go straight to the hub's gate, no network in between."""

    def __init__(self, hub: Hub, remote: str) -> None:
        self._hub = hub
        # Not bounded, on purpose: the inbox is read by the SDK's reader loop, which never waits
        # on anything but the next frame, and the outbox is written by an edge that makes one
        # call per outside request, so both are bounded upstream (by the HTTP server's
        # connections); a bound here would only add a way to deadlock the hub with itself.
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""
        self.session = Session(id=new_id(), remote=remote, challenge=secrets.token_hex(16),
                               send=self._deliver, close=self._closed_by_hub)
        self._pump = asyncio.ensure_future(self._run())
        self._inbox.put_nowait(codec.dumps_text(frames.challenge(
            self.session.challenge, hub.key.id, hub.settings.max_envelope_bytes)))

    async def _deliver(self, frame: frames.Frame) -> None:
        await self._hub.durable()  # the edge may act on it outside the hub at once
        if self.close_code is None:
            self._inbox.put_nowait(codec.dumps_text(frame))

    async def _closed_by_hub(self, code: int, reason: str) -> None:
        self._shut(code, reason)

    async def _run(self) -> None:
        """Hand the client's frames to the gate one at a time, like a WebSocket edge does."""
        try:
            while True:
                text = await self._outbox.get()
                if text is None:
                    break
                await self._hub.handle(text.encode(), self.session)
        except asyncio.CancelledError:
            pass
        finally:
            with logged(log, f"ending in-process session {self.session.id}"):
                await self._hub.disconnected(self.session)

    def _shut(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._inbox.put_nowait(None)
            self._outbox.put_nowait(None)

    # -- what Connection calls --------------------------------------------------------------

    async def send(self, text: str) -> None:
        if self.close_code is not None:
            raise ConnectionLost(f"the in-process connection is closed ({self.close_reason})")
        self._outbox.put_nowait(text)

    async def recv(self) -> str:
        text = await self._inbox.get()
        if text is None:
            self._inbox.put_nowait(None)  # every later recv says so too
            raise ConnectionLost(f"the in-process connection is closed ({self.close_reason})")
        return text

    def __aiter__(self) -> LocalSocket:
        return self

    async def __anext__(self) -> str:
        text = await self._inbox.get()
        if text is None:
            self._inbox.put_nowait(None)
            raise StopAsyncIteration
        return text

    async def aclose(self) -> None:
        self._shut(1000, "closed by the edge")
        await asyncio.gather(self._pump, return_exceptions=True)


def local_transport(hub: Hub, remote: str) -> Transport:
    """A `Connection` transport that opens in-process sockets to `hub`."""
    async def open_socket() -> LocalSocket:
        return LocalSocket(hub, remote)
    return open_socket
