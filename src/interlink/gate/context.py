"""What one envelope's trip through the gate knows: the per-request state has one home here,
never on a stage's `self`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..envelope import Envelope
from ..errors import GateDenied
from ..identity import Credential
from ..labels import BOTTOM, Label

if TYPE_CHECKING:
    from ..frames import Frame
    from .lookups import CallLookup, CallView

Send = Callable[["Frame"], Awaitable[None]]
"""How a session is sent a frame (`frames.py`: the only shapes it takes)."""
Close = Callable[[int, str], Awaitable[None]]


class Outgoing:
    """Frames a gate run sends to other sessions (a call delivered to its callee, a reply to
    its caller), held until the run has written everything it writes, so that one commit
    covers them all: nothing may leave the hub before what it did is durable, and a frame
    sent mid-run would commit the run's writes so far and the rest again after. Sent in
    order at the end of the run, before the sender's own verdict."""

    __slots__ = ("frames", "open")

    def __init__(self) -> None:
        self.frames: list[tuple[Session, Frame]] = []
        self.open = True


OUTGOING: ContextVar[Outgoing | None] = ContextVar("interlink_gate_outgoing", default=None)
"""The running gate's `Outgoing` (None outside a run). Tasks started during a run inherit it;
once the run has sent its frames it is closed, and their later frames go at once."""


async def send_after_run(session: Session, frame: Frame) -> None:
    """Send `frame` to `session`: at the end of the gate run this is part of, or now. Failures
    to send are the caller's to handle (the session may be gone)."""
    outgoing = OUTGOING.get()
    if outgoing is not None and outgoing.open:
        outgoing.frames.append((session, frame))
        return
    await session.send(frame)


@dataclass(eq=False, slots=True)
class Session:
    """One connection of one agent to this hub (made by an edge, authenticated by its hello)."""

    id: str
    remote: str
    challenge: str
    send: Send
    close: Close | None = None
    agent: str | None = None
    credential: Credential | None = None
    connected_at: float = field(default_factory=time.time)
    closed: bool = False
    serves: bool = False
    """Whether this is the agent's serving connection (calls to the agent arrive on it)."""


@dataclass(eq=False, slots=True)
class GateContext:
    """One envelope on its way through the gate."""

    raw: bytes
    session: Session
    received: float
    wire: dict[str, Any] | None = None
    """The envelope exactly as the sender signed it; forwarded unchanged to the recipient."""
    env: Envelope | None = None
    credential: Credential | None = None
    """The sender's verified credential (set by authenticate)."""
    rule: str | None = None
    """The rule that allowed the envelope (set by authorize)."""
    label: Label = BOTTOM
    """The envelope's effective label (set by the label stage)."""
    answer: dict[str, Any] = field(default_factory=dict)
    """Extra fields for the sender's `accepted` answer (set by services)."""
    passed: list[str] = field(default_factory=list)
    """The gate stages this envelope passed, in order (the pipeline's record, for its span)."""
    # What stages and services learned on the way, for the stages after them (typed fields,
    # not a bag of string keys: a misspelt one is a type error).
    audit_detail: dict[str, Any] | None = None
    """Extra facts for this envelope's audit record (a retry, a hold, a delegation, ...)."""
    fail_call: str | None = None
    """A reply or progress whose call fails if this envelope is withheld (label, validate)."""
    hold: str | None = None
    """Why a call waits for an approver (the rule), set by label."""
    delegation_parent: Any = None
    """The delegation a `delegate` envelope narrows (authorize → the hub's delegations)."""
    call_record: Any = None
    """The call record as commit left it (a reply's or progress's call), for deliver."""
    retry: Any = None
    """The call record a call with a known id retries (commit → deliver)."""
    call_seq: int | None = None
    """A new call's sequence on its target's log (commit → deliver from the commit step)."""
    card: Any = None
    """The card a hello registered."""
    replaced: Session | None = None
    """The connection a hello took over from."""
    subscription: Any = None
    """A subscription commit opened, for deliver to start."""
    watch: Any = None
    """A memory watch commit opened, for deliver to start ..."""
    watch_after: int | None = None
    """... after this revision."""
    calls: dict[str, CallView | None] = field(default_factory=dict)
    """Call records read for this envelope, by id (see `call`): each read once."""
    denial: GateDenied | None = None
    failed_stage: str | None = None

    async def call(self, lookup: CallLookup, call_id: str) -> CallView | None:
        """The record of call `call_id` (a `lookups.CallView`, or None), read from `lookup`
        the first time a stage asks and kept for the rest of this envelope's trip: a reply
        used to read its call's record five times on its way through the gate."""
        if call_id not in self.calls:
            self.calls[call_id] = await lookup.record(call_id)
        return self.calls[call_id]
