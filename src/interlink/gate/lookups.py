"""What the gate's stages may ask of the rest of the hub: one module of read-only protocols,
typed, so stages depend on these shapes and never on a service (services implement them; the
hub wires them in). Imports point one way: services → gate, never back."""

from __future__ import annotations

from typing import Any, Protocol

from ..labels import Label
from .context import GateContext, Session


class CallView(Protocol):
    """What a stage may read of a call's record."""

    @property
    def id(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def skill(self) -> str: ...
    @property
    def conversation(self) -> str: ...
    @property
    def hops(self) -> int: ...


class CallLookup(Protocol):
    async def record(self, call_id: str) -> CallView | None:
        """The call's record, if it exists (read through `GateContext.call`, once per
        envelope)."""

    def open_calls(self, caller: str) -> int:
        """How many unfinished calls `caller` has made."""


class CardLookup(Protocol):
    async def card(self, agent: str) -> Any:
        """The agent's registered card (skills with schemas and output labels), or None."""


class SchemaLookup(Protocol):
    def schema(self, topic: str) -> Any:
        """The topic's latest schema (with `version` and a jsonschema `validator`), or None."""


class TaintLookup(Protocol):
    async def of(self, agent: str, conversation: str) -> Label:
        """Everything the hub delivered to `agent` (in `conversation`, for agents so scoped)."""


class SubscriptionLookup(Protocol):
    def holds(self, session: Session, consumer: str) -> bool:
        """Whether this connection subscribes to the durable consumer `consumer`."""

    def subscription(self, session: Session, sub_id: str) -> object | None:
        """This connection's subscription `sub_id`, if it has one."""


class AuditSink(Protocol):
    async def record_gate(self, ctx: GateContext) -> None:
        """One audit record for this envelope's gate decision."""
