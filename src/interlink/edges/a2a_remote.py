"""Remote A2A agents as mesh agents: `interlink agent add NAME --a2a URL`.

For each enrolled agent with an `a2a:` entry in mesh.yaml, the hub resolves the remote Agent
Card (verifying its signature when a `card_key` is configured) and runs a proxy: an ordinary
mesh `Agent` named NAME, with the card's skills, connected to the hub in-process with NAME's
credential. Mesh agents call `NAME.skill` like any other agent: the call passes the gate
(the caller's grants, audit), the proxy sends it to the remote agent with the official a2a-sdk
client, and the answer comes back through the gate as NAME's reply, labelled with where it
came from (`provenance: ["a2a:<url>"]`, `integrity: untrusted`).

A remote agent that is down or has a bad card is retried with backoff; until it is up, calls
to it wait like calls to any offline agent (and time out the same way).
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import AgentCard, Message, Part, Role, SendMessageRequest, TaskState
from a2a.utils.signing import create_signature_verifier
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.protobuf.json_format import MessageToDict, ParseDict

from ..envelope import child_traceparent
from ..errors import InputRequired
from ..identity import CredentialFile
from ..logs import logged
from ..policy import Policy, RemoteA2A
from ..sdk import Agent, SkillContext
from .a2a import SCHEMAS_EXTENSION
from .local import local_transport

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("interlink.a2a.remote")

RETRY_MAX = 30.0
CALL_TIMEOUT = 300.0


class RemoteAgents:
    """Keeps one proxy running for every remote A2A agent in the policy."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._configs: dict[str, RemoteA2A] = {}
        self.status: dict[str, str] = {}

    def sync(self, policy: Policy) -> None:
        """Start proxies for new remote agents; stop those removed or changed."""
        wanted = {name: grants.a2a for name, grants in policy.agents.items() if grants.a2a}
        for name in list(self._tasks):
            if wanted.get(name) != self._configs.get(name):
                self._tasks.pop(name).cancel()
                self._configs.pop(name, None)
        for name, config in wanted.items():
            if name not in self._tasks:
                self._configs[name] = config
                self._tasks[name] = asyncio.ensure_future(self._keep(name, config))

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _keep(self, name: str, config: RemoteA2A) -> None:
        backoff = 0.5
        while True:
            try:
                await self._serve(name, config)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status[name] = f"unavailable: {exc}"
                log.warning("remote A2A agent %s at %s: %s; retrying in %.0fs", name,
                            config.url, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX)

    async def _serve(self, name: str, config: RemoteA2A) -> None:
        headers = {}
        if config.token_env:
            token = os.environ.get(config.token_env)
            if not token:
                raise RuntimeError(f"${config.token_env} (its bearer token) is not set")
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(headers=headers, timeout=CALL_TIMEOUT,
                                     event_hooks={"request": [_carry_trace]}) as http:
            card, verified = await self._card(http, config)
            client = await create_client(card, client_config=ClientConfig(
                streaming=False, httpx_client=http))
            proxy = self._proxy(name, config, card, client)
            await self.hub.audit.append("remote_agent", agent=name, url=config.url,
                                        card=verified, skills=sorted(proxy.skills))
            self.status[name] = f"connected ({verified})"
            async with proxy:
                await asyncio.Event().wait()  # until the hub stops or the policy changes

    async def _card(self, http: httpx.AsyncClient, config: RemoteA2A) -> tuple[AgentCard, str]:
        resolver = A2ACardResolver(http, config.url)
        if config.card_key:
            key = load_pem_public_key(_pem(config.card_key, self.hub.home.root))
            verifier = create_signature_verifier(lambda kid, jku: key,  # type: ignore[arg-type,return-value]
                                                 ["EdDSA", "ES256", "RS256", "PS256"])
            return await resolver.get_agent_card(signature_verifier=verifier), "signature verified"
        card = await resolver.get_agent_card()
        return card, ("signed, not verified (no card_key configured)" if card.signatures
                      else "unsigned")

    def _proxy(self, name: str, config: RemoteA2A, card: AgentCard, client: Any) -> Agent:
        credential = CredentialFile.load(self.hub.home.credential_path(name))
        proxy = Agent(name, credential=credential, description=card.description,
                      version=card.version or "0.0.0",
                      labels={"provenance": [f"a2a:{config.url}"], "integrity": "untrusted"},
                      transport=local_transport(self.hub, f"a2a-remote:{name}"))
        schemas = _schemas(card)
        for skill in card.skills:
            proxy.skill(skill.id, description=skill.description,
                        input_schema=schemas.get(skill.id, {}).get("input") or None,
                        output_schema=schemas.get(skill.id, {}).get("output") or None,
                        )(_forwarder(client, skill.id, config.url))
        return proxy


_TRACE: ContextVar[str | None] = ContextVar("interlink_remote_trace", default=None)
"""The trace of the call being forwarded (its skill context's), for `_carry_trace`."""


async def _carry_trace(request: httpx.Request) -> None:
    """The remote agent's request carries the mesh call's trace (W3C `traceparent`)."""
    traceparent = _TRACE.get()
    if traceparent:
        request.headers["traceparent"] = child_traceparent(traceparent)


def _forwarder(client: Any, skill: str, url: str) -> Any:
    async def forward(ctx: SkillContext, req: Any) -> Any:
        _TRACE.set(ctx.traceparent)
        message = Message(role=Role.ROLE_USER, message_id=ctx.call_id,
                          parts=[Part(text=req) if isinstance(req, str)
                                 else ParseDict({"data": req}, Part())])
        request = SendMessageRequest(message=message)
        request.metadata.update({"skill": skill})
        final: dict[str, Any] = {}
        async for event in client.send_message(request):
            final = MessageToDict(event)
        if "message" in final:
            return _value(final["message"].get("parts") or [])
        task = final.get("task") or {}
        state = task.get("status", {}).get("state")
        said = _text(task.get("status", {}).get("message", {}).get("parts") or [])
        if state == TaskState.Name(TaskState.TASK_STATE_COMPLETED):
            parts = [p for a in task.get("artifacts") or [] for p in a.get("parts") or []]
            return _value(parts)
        if state == TaskState.Name(TaskState.TASK_STATE_INPUT_REQUIRED):
            raise InputRequired(said or "the remote agent needs more input")
        raise RuntimeError(f"the remote A2A agent at {url} ended the task {state}: {said}")
    return forward


def _value(parts: list[dict[str, Any]]) -> Any:
    """One data or text part as its value; several as a list of values."""
    values = [p["data"] if "data" in p else p.get("text") for p in parts]
    return values[0] if len(values) == 1 else values


def _text(parts: list[dict[str, Any]]) -> str:
    return " ".join(str(p.get("text", "")) for p in parts if "text" in p)


def _schemas(card: AgentCard) -> dict[str, Any]:
    for extension in card.capabilities.extensions:
        if extension.uri == SCHEMAS_EXTENSION:
            with logged(log, f"reading {card.name}'s skill-schema extension", logging.WARNING):
                return dict(MessageToDict(extension.params).get("skills") or {})
    return {}


def _pem(value: str, root: Path) -> bytes:
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    path = Path(value)
    return (path if path.is_absolute() else root / path).read_bytes()
