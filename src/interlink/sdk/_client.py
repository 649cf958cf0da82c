"""`connect()`: a plain client for code that calls agents but serves no skills.

    async with interlink.connect("ideator") as mesh:
        draft = await mesh.call("drafter", "draft", {"topic": "agent meshes"})
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError, UsageError
from ..identity import CredentialFile
from ._agent import credential_path, home_of
from ._connection import Connection, ProgressHandler, Reply
from ._events import Subscription
from ._memory import Memory
from ._transport import Transport


class Mesh:
    """An open client connection to the mesh, acting as one enrolled agent."""

    def __init__(self, name: str, *, credential: str | os.PathLike[str] | None = None,
                 hub: str | list[str] | None = None, transport: Transport | None = None,
                 tls_ca: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self._path = credential_path(name, credential)
        self._hub = hub
        self._tls_ca = tls_ca
        self._transport = transport
        self._connection: Connection | None = None

    async def __aenter__(self) -> Mesh:
        credential = CredentialFile.load(self._path)
        if credential.credential.agent != self.name:
            raise ConfigError(f"{self._path} is the credential of "
                              f"{credential.credential.agent!r}, not of {self.name!r}")
        self._connection = Connection(credential, url=self._hub, home=home_of(self._path),
                                      transport=self._transport, tls_ca=self._tls_ca)
        await self._connection.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise UsageError("use `async with connect(...) as mesh:` first")
        return self._connection

    async def call(self, agent: str, skill: str, data: Any = None, *, timeout: float = 30.0,
                   call_id: str | None = None, conversation: str | None = None,
                   on_progress: ProgressHandler | None = None,
                   delegation: str | None = None) -> Any:
        """Call `agent.skill`; see `Connection.call` for the errors it raises. With
        `delegation` (a token from `delegate()`), the call is made for the delegator."""
        return await self.connection.call(agent, skill, data, timeout=timeout, call_id=call_id,
                                          conversation=conversation, on_progress=on_progress,
                                          delegation=delegation)

    async def call_with_labels(self, agent: str, skill: str, data: Any = None, *,
                               timeout: float = 30.0, call_id: str | None = None,
                               conversation: str | None = None,
                               on_progress: ProgressHandler | None = None,
                               delegation: str | None = None) -> Reply:
        """Like `call`; the `Reply` also carries the answer's effective label (`.labels`)."""
        return await self.connection.call_with_labels(
            agent, skill, data, timeout=timeout, call_id=call_id, conversation=conversation,
            on_progress=on_progress, delegation=delegation)

    async def endorse(self, agent: str, conversation: str, *, reason: str = "") -> None:
        """Vouch for what `agent` was given in `conversation` (untrusted → trusted); needs an
        `endorse` grant; audited."""
        await self.connection.relabel("endorse", agent, conversation, reason=reason)

    async def declassify(self, agent: str, conversation: str, *, level: str,
                         drop_tags: list[str] | None = None, reason: str = "") -> None:
        """Lower the confidentiality of `agent`'s context in `conversation`; needs a
        `declassify` grant; audited."""
        await self.connection.relabel("declassify", agent, conversation, level=level,
                                      drop_tags=drop_tags or [], reason=reason)

    async def approve(self, call_id: str, *, approve: bool = True, reason: str = "") -> None:
        """Let a call held for approval go on (or refuse it); needs an `approve` grant."""
        await self.connection.approve(call_id, approve=approve, reason=reason)

    async def delegate(self, to: str, rights: list[str], *, ttl: float = 3600.0,
                       from_token: str | None = None) -> str:
        """Let agent `to` call `rights` (agent.skill) for this agent, for `ttl` seconds (with
        `from_token`: pass on part of a delegation held). Tokens can be narrowed offline with
        `interlink.delegation.attenuate`."""
        return await self.connection.delegate(to, rights, ttl=ttl, from_token=from_token)

    async def publish(self, topic: str, data: Any = None, *,
                      event_id: str | None = None) -> dict[str, Any]:
        """Publish an event on `topic`; returns once the hub committed it (`seq`, `topic_seq`,
        `duplicate`). Retrying with the same `event_id` never stores it twice."""
        return await self.connection.publish(topic, data, event_id=event_id)

    async def subscribe(self, pattern: str, *, durable: str | None = None,
                        deliver: str | None = None, from_seq: int | None = None,
                        since: float | None = None, ack_wait: float | None = None,
                        max_deliver: int | None = None) -> Subscription:
        """Subscribe to `pattern` (`*` one token, `>` the rest).

        Live by default, from now on; `from_seq` or `since` (a Unix time) replay first.
        With `durable`, a named consumer that keeps its place while nobody listens; its events
        must be acked; several subscribers with one durable name share its events.
        """
        return await self.connection.subscribe(
            pattern, durable=durable, deliver=deliver, from_seq=from_seq, since=since,
            ack_wait=ack_wait, max_deliver=max_deliver)

    def memory(self, namespace: str, *, conversation: str | None = None) -> Memory:
        """The shared-memory namespace `namespace` (reads and writes as granted in mesh.yaml);
        with `conversation`, reads taint and writes carry that conversation's label."""
        return Memory(self.connection, namespace, conversation=conversation)

    async def register_schema(self, topic: str, schema: dict[str, Any]) -> dict[str, Any]:
        """Register a (new version of the) JSON Schema events on `topic` must match."""
        return await self.connection.register_schema(topic, schema)


def connect(name: str, *, credential: str | os.PathLike[str] | None = None,
            hub: str | list[str] | None = None, transport: Transport | None = None,
            tls_ca: str | os.PathLike[str] | None = None) -> Mesh:
    """Open a client connection as the enrolled agent `name` (use with `async with`);
    `transport` replaces the WebSocket (e.g. an in-process socket to a hub in this process);
    `tls_ca` is the CA a `wss://` hub's certificate is checked against (default:
    `$INTERLINK_CA`, else the mesh home's `hub.tls.ca`, else the system's trust store)."""
    return Mesh(name, credential=credential, hub=hub, transport=transport, tls_ca=tls_ca)
