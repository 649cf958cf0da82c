"""The wire under a `Connection`: the socket to the hub, the handshake, reconnecting with
backoff, signed envelopes and the gate's verdict on each, re-sending what was not answered,
and reading the hub's frames. What rides on it (calls; events and memory) lives in
`_calls.py` and `_streams.py`; `Connection` (`_connection.py`) is the three together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .. import codec, frames
from ..envelope import HUB, check_signature, new_id, new_traceparent, seal
from ..errors import ConnectionLost, GateDenied, UsageError
from ..identity import Credential, CredentialFile
from ..logs import logged
from ..tasks import Tasks
from ._transport import Socket, Transport, WebSocket
from ._transport import reason as _reason

log = logging.getLogger("interlink.sdk")

REPLACED = 4000
"""The close code the hub uses when a newer connection of the same agent takes over."""

CallHandler = Callable[[dict[str, Any], Credential], Coroutine[Any, Any, None]]


RETRIABLE = ("rate_limited", "store_unavailable")
"""Refusals that say "not now" rather than "no": what settles admitted work tries again."""

class Wire:
    """The socket, the handshake and the envelopes of one agent's connection. States: new →
    open → closed."""

    def __init__(self, credential: CredentialFile, *, url: str | list[str] | None = None,
                 card: dict[str, Any] | None = None, on_call: CallHandler | None = None,
                 reconnect: bool = True, connect_timeout: float = 10.0,
                 transport: Transport | None = None,
                 labels: dict[str, Any] | None = None,
                 home: Path | None = None,
                 tls_ca: str | os.PathLike[str] | None = None) -> None:
        self.credential = credential
        self.tls_ca = trusted_ca(tls_ca, home)
        """The CA a wss:// hub is checked against (None: the system's trust store)."""
        self.agent = credential.credential.agent
        self.urls = hub_urls(url, credential, home)
        """Where the hub may be reached, tried in turn (a dead hub's agents move to the next)."""
        self.url = self.urls[0]
        self.card = card or {"name": self.agent}
        self.on_call = on_call
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.transport = transport
        self.labels = labels or {}
        self.max_envelope_bytes: int | None = None
        """The hub's envelope size limit (from its challenge): larger ones are refused here."""
        self.refusal: GateDenied | None = None
        """Why the hub refused to take this connection back after it dropped (e.g. the agent
        was suspended), if it did."""
        self._private = credential.private()
        self._hub_key = credential.hub_key()
        self._ws: Socket | None = None
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._outbox: dict[str, dict[str, Any]] = {}  # envelopes to resend until answered
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._state = "new"
        self._handlers = Tasks(log, f"{self.agent}'s connection")
        """Skills and deliveries being handled: ended when the connection closes."""
        self.reconnects = 0

    async def open(self, *, wait: bool = False) -> None:
        """Connect and say hello. With `wait`, a hub that cannot be reached yet is waited for
        (retrying with backoff, saying so); a refusal (a credential this hub did not issue, a
        suspended or removed agent) raises GateDenied at once either way."""
        if self._state != "new":
            raise UsageError(f"this connection is {self._state}; make a new one")
        self._state = "open"
        backoff = 0.2
        try:
            while True:
                try:
                    await self._handshake()
                    break
                except ConnectionLost as exc:
                    if not wait:
                        raise
                    log.warning("%s: waiting for the hub at %s (%s); retrying in %.1fs",
                                self.agent, self.url, exc.reason_short, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        except BaseException:
            self._state = "closed"
            self._closed.set()
            raise
        self._reader = asyncio.ensure_future(self._run())

    async def wait_closed(self) -> None:
        """Until this connection ends for good (closed, or the hub refused to take it back:
        then `refusal` says why)."""
        await self._closed.wait()

    async def aclose(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._closed.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._handlers.aclose()
        if self._ws is not None:
            with logged(log, f"{self.agent}: closing the socket"):
                await self._ws.aclose()
        lost = ConnectionLost("the connection was closed")
        for future in self._acks.values():
            if not future.done():
                future.set_exception(lost)
        self._acks.clear()
        self._fail_calls(lost, forget=True)
        self._end_streams()

    @property
    def is_open(self) -> bool:
        return self._state == "open" and self._ready.is_set()

    async def _handshake(self) -> None:
        """Connect to the current URL, else each of the others in turn."""
        failure: ConnectionLost | None = None
        start = self.urls.index(self.url) if self.url in self.urls else 0
        for i in range(len(self.urls)):
            self.url = self.urls[(start + i) % len(self.urls)]
            try:
                await self._handshake_one()
                return
            except ConnectionLost as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _handshake_one(self) -> None:
        try:
            opening = (self.transport() if self.transport is not None
                       else WebSocket.open(self.url, tls_ca=self.tls_ca))
            ws = await asyncio.wait_for(opening, self.connect_timeout)
        except (TimeoutError, ConnectionLost) as exc:
            reason = str(exc) if isinstance(exc, ConnectionLost) else _reason(exc)
            lost = ConnectionLost(f"cannot reach the hub at {self.url} ({reason}): is "
                                  "`interlink serve` running, and is the URL right?")
            lost.reason_short = reason
            raise lost from exc
        try:
            await self._greet(ws)
        except (TimeoutError, ConnectionLost, ValueError, KeyError,
                AttributeError) as exc:  # the hub died mid-handshake, or garbled it
            with logged(log, f"{self.agent}: closing a half-open socket"):
                await ws.aclose()
            lost = ConnectionLost(f"the hub at {self.url} did not finish the handshake "
                                  f"({_reason(exc)})")
            lost.reason_short = "handshake cut short"
            raise lost from exc

    async def _greet(self, ws: Any) -> None:
        """Answer the hub's challenge with a signed hello and wait for its verdict."""
        try:
            challenge = frames.read(codec.loads(
                await asyncio.wait_for(ws.recv(), self.connect_timeout)))
        except ValueError:  # not JSON, or not a frame
            challenge = None
        if challenge is None or challenge["op"] != "challenge":
            await ws.aclose()
            raise ConnectionLost(f"{self.url} did not greet like an Interlink hub")
        limit = challenge.get("max_envelope_bytes")
        self.max_envelope_bytes = limit if isinstance(limit, int) and limit > 0 else None
        hello = self._seal({
            "id": new_id(), "kind": "hello", "sender": self.agent, "target": HUB,
            "conversation": new_id(), "traceparent": new_traceparent(),
            "body": {"credential": self.credential.credential.model_dump(),
                     "challenge": challenge["challenge"], "card": self.card,
                     "serves": self.on_call is not None}})
        await ws.send(codec.dumps_text(hello))
        while True:
            answer = codec.loads(await asyncio.wait_for(ws.recv(), self.connect_timeout))
            if answer.get("id") == hello["id"]:
                break
        if answer.get("op") != "accepted":
            await ws.aclose()
            raise GateDenied.from_dict(answer.get("error") or {})
        self._ws = ws
        self._ready.set()

    async def _run(self) -> None:
        backoff = 0.05
        while self._state == "open":
            ws = self._ws
            assert ws is not None
            try:
                async for text in ws:
                    self._on_frame(codec.loads(text))
            except ConnectionLost:
                pass
            except Exception:
                log.exception("%s: reading from the hub failed", self.agent)
            self._ready.clear()
            self._fail_unsafe(ConnectionLost(
                "the connection to the hub dropped while this request was in flight; it "
                "may or may not have been applied: read back, then retry"))
            if self._state != "open":
                return
            if ws.close_code == REPLACED:
                log.warning("%s: another connection of this agent took over; this one stops "
                            "(%s)", self.agent, ws.close_reason)
                await self._fail_all(ConnectionLost("replaced by a newer connection of "
                                                    f"{self.agent}"))
                self._state = "closed"
                self._closed.set()
                return
            if not self.reconnect:
                await self._fail_all(ConnectionLost("the hub closed the connection"))
                return
            while self._state == "open":
                await asyncio.sleep(backoff * (1 + random.random()))
                try:
                    await self._handshake()
                except GateDenied as exc:
                    log.error("%s: the hub refused to take us back: %s", self.agent, exc)
                    self.refusal = exc
                    await self._fail_all(exc)
                    self._state = "closed"
                    self._closed.set()
                    return
                except (TimeoutError, ConnectionLost, OSError) as exc:
                    backoff = min(backoff * 2, 2.0)
                    log.info("%s: hub unreachable, retrying in ~%.1fs (%s)", self.agent,
                             backoff, exc)
                    continue
                except Exception:  # whatever it was, the reconnecting must go on
                    backoff = min(backoff * 2, 2.0)
                    log.exception("%s: reconnecting failed; retrying in ~%.1fs", self.agent,
                                  backoff)
                    continue
                backoff = 0.05
                self.reconnects += 1
                try:
                    await self._resend()
                except Exception:  # the new connection dropped too: the loop notices
                    log.warning("%s: re-sending after a reconnect failed", self.agent,
                                exc_info=True)
                break

    def _fail_unsafe(self, exc: Exception) -> None:
        """Requests that are not re-sent after a reconnect (a memory write could apply twice)
        fail at once instead of waiting for their timeout."""
        for env_id, future in list(self._acks.items()):
            if env_id not in self._outbox and not future.done():
                future.set_exception(exc)

    async def _fail_all(self, exc: Exception) -> None:
        for future in self._acks.values():
            if not future.done():
                future.set_exception(exc)
        self._fail_calls(exc)

    async def _resend(self) -> None:
        """After a reconnect: subscriptions first (so acks find them), then everything
        unanswered, re-signed, with its old id."""
        await self._renew_streams()
        for fields in list(self._outbox.values()):
            await self._send_fields(fields)
        await self._resend_calls()

    def _seal(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.labels and "labels" not in fields:
            fields = {**fields, "labels": self.labels}
        return seal(fields, self._private)

    async def _send_fields(self, fields: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or not self._ready.is_set():
            return  # sent again on reconnect
        text = codec.dumps_text(self._seal(fields))
        if self.max_envelope_bytes and len(text.encode()) > self.max_envelope_bytes:
            # the hub would refuse it (and a frame far over the limit closes the socket, so a
            # re-send after the reconnect would loop): refuse it here, at once, with the reason
            self._outbox.pop(fields["id"], None)
            waiting = self._acks.get(fields["id"])
            if waiting is not None and not waiting.done():
                waiting.set_exception(GateDenied(
                    "decode", "too_large",
                    f"the envelope is {len(text.encode())} bytes; this hub accepts at most "
                    f"{self.max_envelope_bytes}. Send large content by reference, or raise "
                    "hub.max_envelope_bytes", "hub.max_envelope_bytes"))
            return
        with contextlib.suppress(ConnectionLost):
            await ws.send(text)

    async def send_raw(self, text: str) -> None:
        """Send a frame as is (for tests of the hub's handling of bad input)."""
        assert self._ws is not None
        await self._ws.send(text)

    async def request(self, fields: dict[str, Any], *, durable: bool = True,
                      timeout: float = 30.0) -> dict[str, Any]:
        """Send an envelope and wait for the gate's verdict; GateDenied if refused. Durable
        envelopes are re-sent after a reconnect until the hub answers."""
        if self._state != "open":
            if self.refusal is not None:  # e.g. suspended: say so, not just "closed"
                raise self.refusal
            raise ConnectionLost(f"the connection is {self._state}")
        env_id = fields["id"]
        if not durable and not self._ready.is_set():
            # not re-sent after a reconnect, so it waits for the connection to be back first
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                raise ConnectionLost(f"the hub was unreachable for {timeout:.0f}s") from None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[env_id] = future
        if durable:
            self._outbox[env_id] = fields
        try:
            await self._send_fields(fields)
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise ConnectionLost(f"the hub did not answer envelope {env_id} within "
                                 f"{timeout:.0f}s") from exc
        finally:
            self._acks.pop(env_id, None)
            self._outbox.pop(env_id, None)
        if answer.get("op") == "refused":
            raise GateDenied.from_dict(answer.get("error") or {})
        return answer

    async def settling(self, fields: dict[str, Any], *, durable: bool = True,
                       timeout: float = 30.0) -> dict[str, Any]:
        """`request` for envelopes that settle admitted work (replies, acks): a retriable
        refusal (the hub's control rate limit; its store briefly unreachable) is retried with
        backoff for up to `timeout` seconds, not dropped."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        delay = 0.05
        while True:
            try:
                return await self.request(fields, durable=durable, timeout=timeout)
            except GateDenied as exc:
                if (exc.code not in RETRIABLE
                        and not (exc.detail or {}).get("retriable")) or loop.time() >= end:
                    raise
                await asyncio.sleep(min(delay * (1 + random.random()),
                                        max(0.0, end - loop.time())))
                delay = min(delay * 2, 2.0)

    def _control(self, kind: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": new_id(), "kind": kind, "sender": self.agent, "target": target,
                "conversation": new_id(), "traceparent": new_traceparent(), "body": body}

    async def _quietly(self, fields: dict[str, Any]) -> None:
        with logged(log, f"{self.agent}: {fields['kind']} {fields['target']}"):
            await self.request(fields, durable=False)

    def _on_frame(self, frame: Any) -> None:
        """One frame from the hub. A frame this SDK cannot read (a broken or hostile hub) is
        logged and skipped; it never ends the connection or the agent."""
        try:
            self._handle_frame(frames.read(frame))
        except Exception as exc:
            log.warning("%s: skipped a frame from the hub that cannot be read (%r): %.200r",
                        self.agent, exc, frame)

    def _handle_frame(self, frame: frames.Frame) -> None:
        if frame["op"] == "accepted" or frame["op"] == "refused":
            future = self._acks.get(frame.get("id") or "")
            if future is not None and not future.done():
                future.set_result(dict(frame))
        elif frame["op"] == "deliver":
            self._on_deliver(dict(frame))
        elif frame["op"] == "event":
            self._on_event(dict(frame))
        elif frame["op"] == "memory":
            self._on_memory(dict(frame))
        elif frame["op"] == "failed":
            self._on_failed(frame["id"], frame["error"] or {})

    def _origin(self, frame: dict[str, Any]) -> Credential | None:
        """The sender's credential, if it and the envelope's signature verify end to end."""
        wire = frame.get("env") or {}
        try:
            credential = Credential.model_validate(frame.get("origin"))
        except Exception:
            return None
        if credential.problem(self._hub_key, self.credential.credential.hub, time.time()):
            return None
        if credential.agent != wire.get("sender") or not check_signature(wire,
                                                                          credential.key()):
            return None
        return credential

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._handlers.spawn(coro)

    # -- what the jobs above the wire do (calls: `_calls.py`; events, memory: `_streams.py`) -

    def _on_deliver(self, frame: dict[str, Any]) -> None:
        """A call, reply or progress delivered to this agent."""

    def _on_failed(self, call_id: str, error: dict[str, Any]) -> None:
        """A call this agent made ended without a reply."""

    def _on_event(self, frame: dict[str, Any]) -> None:
        """An event for one of this connection's subscriptions."""

    def _on_memory(self, frame: dict[str, Any]) -> None:
        """A change for one of this connection's memory watches."""

    def _fail_calls(self, exc: Exception, *, forget: bool = False) -> None:
        """End every call in flight with `exc` (and forget them, when closing)."""

    async def _renew_streams(self) -> None:
        """After a reconnect, before anything is re-sent: subscribe and watch again."""

    async def _resend_calls(self) -> None:
        """After a reconnect: send again the calls not yet answered, with their old ids."""

    def _end_streams(self) -> None:
        """On close: end every subscription's and watch's iteration."""


def trusted_ca(given: str | os.PathLike[str] | None, home: Path | None) -> str | None:
    """The CA file for a wss:// hub: given, `$INTERLINK_CA`, or the mesh home's `hub.tls.ca`
    (None: the system's trust store)."""
    if given:
        return str(given)
    if os.environ.get("INTERLINK_CA"):
        return os.environ["INTERLINK_CA"]
    if home is not None and (home / "mesh.yaml").exists():
        from ..home import hub_address
        try:
            ca = hub_address(home)[1]
        except Exception:  # an unreadable mesh.yaml: the system's trust store
            return None
        return str(ca) if ca else None
    return None


def hub_urls(url: str | list[str] | None, credential: CredentialFile,
             home: Path | None) -> list[str]:
    """Where to find the hub, first found wins: the URL(s) given (a list, or comma-separated),
    `$INTERLINK_HUB`, the mesh home the credential lives in (its mesh.yaml's host and port, so
    a hub moved to another port is followed), else the URL written when the agent was
    enrolled. A credential names the hub it belongs to; where that hub listens may change."""
    given = url or os.environ.get("INTERLINK_HUB")
    if given:
        urls = given if isinstance(given, list) else given.split(",")
        return [u.strip() for u in urls if u.strip()]
    if home is not None and (home / "mesh.yaml").exists():
        from ..home import hub_address
        try:
            found: str | None = hub_address(home)[0]
        except Exception:  # an unreadable mesh.yaml: fall back to the enrolled URL
            found = None
        if found:
            return [found] + ([credential.hub_url] if credential.hub_url != found else [])
    return [credential.hub_url]
