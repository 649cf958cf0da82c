"""Registry: which agents are enrolled, which are connected, and what they can do.

An agent's hello carries its A2A-shaped Agent Card (name, description, version, skills with ids,
descriptions and JSON Schemas). The registry keeps each card in the `registry` bucket
(`cards/<agent>`) and a presence key (`presence/<agent>`) that lives `PRESENCE_TTL` seconds and
is refreshed by the hub every `PRESENCE_REFRESH` seconds while the agent's connection is alive
(the connection itself is kept alive by WebSocket pings): so any process reading the store sees
an agent as connected only while a hub really holds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..envelope import SKILL_NAME
from ..errors import GateDenied, RevisionMismatch
from ..gate.context import GateContext, Session
from ..gate.stage import deny
from ..labels import Label, LabelError
from ..policy import Policy
from ..store import KV

log = logging.getLogger("interlink.registry")

PRESENCE_TTL = 30.0
PRESENCE_REFRESH = 10.0


class SkillCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    output_label: dict[str, Any] = Field(default_factory=dict)
    """A label the skill's replies carry at least (the agent's own statement: it may raise what
    its replies carry, never lower it), e.g. `{level: confidential, tags: [phi]}`."""

    @field_validator("output_label")
    @classmethod
    def _label(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Label.parse(value)
        except LabelError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not SKILL_NAME.fullmatch(value):
            raise ValueError("a skill id is letters, digits, _ and -, at most 64")
        return value

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        except RecursionError:
            raise ValueError("the JSON Schema is nested too deeply") from None
        return value


class AgentCard(BaseModel):
    """The A2A-shaped card an agent registers (skills carry their schemas)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    version: str = "0.0.0"
    skills: list[SkillCard] = Field(default_factory=list)


@dataclass(frozen=True)
class AgentStatus:
    name: str
    description: str
    connected: bool
    card: AgentCard | None
    last_seen: float | None
    breaker: str = "closed"
    suspended: bool = False


class Registry:
    """Cards and presence; also the hub-local table of live sessions."""

    def __init__(self, kv: KV, *, hub: str = "hub") -> None:
        self.kv = kv
        self.hub = hub
        """This hub among those sharing the store: presence says which hub an agent is on."""
        self.sessions: dict[str, Session] = {}
        """Each agent's serving connection (the one its calls are delivered to)."""
        self.by_id: dict[str, Session] = {}
        """Every authenticated connection, serving or client."""
        self._cards: dict[str, AgentCard] = {}

    # -- the gate hands hellos here ----------------------------------------------------------

    async def commit(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None and ctx.credential is not None
        if env.body.get("serves") is False:
            return None  # a client connection (connect(), the CLI, an edge): no card, no calls
        try:
            card = AgentCard.model_validate(env.body.get("card") or {"name": env.sender})
        except ValidationError as exc:
            return deny("commit", "bad_card", f"the agent card is not valid: {exc}")
        if card.name != env.sender:
            return deny("commit", "bad_card",
                        f"the card names {card.name!r}, but the sender is {env.sender!r}")
        if len({s.id for s in card.skills}) != len(card.skills):
            return deny("commit", "bad_card", "two skills in the card share one id")
        await self.kv.put(f"cards/{env.sender}", card.model_dump_json().encode())
        self._cards[env.sender] = card
        await self._touch(env.sender)
        ctx.card = card
        return None

    async def deliver(self, ctx: GateContext) -> None:
        env, session = ctx.env, ctx.session
        assert env is not None
        session.agent = env.sender
        session.credential = ctx.credential
        self.by_id[session.id] = session
        ctx.answer["agent"] = env.sender
        await self.kv.put(f"seen/{env.sender}", json.dumps({  # any connection counts as seen
            "seen": time.time(), "via": session.remote,
            "serves": env.body.get("serves") is not False}).encode())
        if env.body.get("serves") is False:
            return  # clients come and go beside the agent's serving connection
        session.serves = True
        previous = self.sessions.get(env.sender)
        self.sessions[env.sender] = session
        if previous is not None and previous is not session and not previous.closed:
            ctx.replaced = previous
            ctx.audit_detail = {"replaced_session": previous.id}

    # -- sessions ----------------------------------------------------------------------------

    def session(self, agent: str) -> Session | None:
        session = self.sessions.get(agent)
        return None if session is None or session.closed else session

    def session_by_id(self, session_id: str | None) -> Session | None:
        session = self.by_id.get(session_id or "")
        return None if session is None or session.closed else session

    async def disconnected(self, session: Session) -> None:
        self.by_id.pop(session.id, None)
        if session.agent and self.sessions.get(session.agent) is session:
            del self.sessions[session.agent]
            key = f"presence/{session.agent}"
            entry = await self.kv.get(key)  # the agent may be on another hub by now
            if entry is not None and json.loads(entry.value or b"{}").get("hub",
                                                                          self.hub) == self.hub:
                try:
                    await self.kv.delete(key, expect=entry.revision)
                except RevisionMismatch:
                    pass  # it came back (here or elsewhere) meanwhile

    async def _touch(self, agent: str) -> None:
        await self.kv.put(f"presence/{agent}", json.dumps({
            "seen": time.time(), "hub": self.hub}).encode(), ttl=PRESENCE_TTL)

    async def follow(self) -> None:
        """Cards other hubs stored (an agent that reconnected elsewhere with new skills): this
        hub's copies are dropped, so it reads the new card (hubs sharing a store run this)."""
        after: int | None = None
        while True:
            try:
                async for entry in self.kv.watch("cards/", after_revision=after):
                    after = entry.revision
                    self._cards.pop(entry.key.removeprefix("cards/"), None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following agent cards stopped (%s); following again", exc)
                self._cards.clear()  # what changed meanwhile is read afresh
                await asyncio.sleep(1.0)

    async def refresh_presence(self) -> None:
        for agent in list(self.sessions):
            await self._touch(agent)

    # -- reading -----------------------------------------------------------------------------

    async def card(self, agent: str) -> AgentCard | None:
        card = self._cards.get(agent)
        if card is None:
            entry = await self.kv.get(f"cards/{agent}")
            card = AgentCard.model_validate_json(entry.value) if entry and entry.value else None
            if card is not None:
                self._cards[agent] = card
        return card

    async def set_breaker(self, agent: str, state: str, *, hub: str = "hub") -> None:
        """Record a target's circuit-breaker state where `interlink agents` reads it, and other
        hubs on the store follow it (`hub` says which hub's breaker changed)."""
        await self.kv.put(f"breakers/{agent}", json.dumps({
            "state": state, "since": time.time(), "hub": hub}).encode())

    async def statuses(self, policy: Policy) -> list[AgentStatus]:
        cards = {e.key.removeprefix("cards/"): e for e in await self.kv.items("cards/")}
        presence = {e.key.removeprefix("presence/"): e for e in await self.kv.items("presence/")}
        breakers = {e.key.removeprefix("breakers/"): json.loads(e.value or b"{}")
                    for e in await self.kv.items("breakers/")}
        seen_any = {e.key.removeprefix("seen/"): json.loads(e.value or b"{}")
                    for e in await self.kv.items("seen/")}
        result = []
        for name, grants in sorted(policy.agents.items()):
            card_entry = cards.get(name)
            card = (AgentCard.model_validate_json(card_entry.value)
                    if card_entry and card_entry.value else None)
            seen = presence.get(name)
            times = [json.loads(seen.value)["seen"]] if seen and seen.value else []
            if name in seen_any:
                times.append(seen_any[name].get("seen", 0))
            result.append(AgentStatus(
                name=name, description=grants.description or (card.description if card else ""),
                connected=seen is not None, card=card,
                last_seen=max(times) if times else None,
                breaker=breakers.get(name, {}).get("state", "closed"),
                suspended=grants.suspended))
        return result
