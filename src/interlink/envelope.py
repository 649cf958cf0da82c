"""The envelope: the one shape of everything that crosses the hub.

A call, its reply, progress on a call, the opening hello of a connection, an event published
on a topic, the bus's control messages (subscribe, ack, unsubscribe, schema) and shared-memory
operations (read, write, watch) are all envelopes. The sender signs the canonical JSON
form of the envelope without `sig`; the hub checks that signature and forwards the envelope
unchanged, so a recipient can check the origin's signature end to end.

The body of a call is an A2A Message (role + parts: text, data, file), so nothing is lost at the
A2A edge; a reply's body holds either an A2A Message or an error.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .identity import canonical, sign, verify

Kind = Literal["hello", "call", "reply", "progress",
               "publish", "subscribe", "ack", "unsubscribe", "schema", "memory", "delegate",
               "endorse", "declassify", "approve"]
KINDS: tuple[str, ...] = ("hello", "call", "reply", "progress", "publish", "subscribe", "ack",
                          "unsubscribe", "schema", "memory", "delegate", "endorse",
                          "declassify", "approve")
BUS_KINDS: tuple[str, ...] = ("publish", "subscribe", "ack", "unsubscribe", "schema")

AGENT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
SKILL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ENVELOPE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

HUB = "hub"


def new_id() -> str:
    return uuid.uuid4().hex


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child_traceparent(parent: str) -> str:
    """Same trace, new span id."""
    trace_id = parent.split("-")[1] if TRACEPARENT.fullmatch(parent) else os.urandom(16).hex()
    return f"00-{trace_id}-{os.urandom(8).hex()}-01"


def valid_agent_name(name: str) -> bool:
    return bool(AGENT_NAME.fullmatch(name))


class Envelope(BaseModel):
    """One crossing. `target` is `agent.skill` for a call, the caller for a reply or progress,
    `hub` for a hello, the topic for a publish or schema, the pattern for a subscribe, the
    durable consumer for an ack, the subscription id for an unsubscribe and the namespace for
    a memory operation; `parent` is the
    causal parent (for a reply: the call it answers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    id: str
    kind: Kind
    sender: str
    target: str = Field(max_length=256)
    conversation: str
    traceparent: str
    parent: str | None = None
    hops: int = Field(default=0, ge=0, le=10_000)
    ts: float
    nonce: str = Field(min_length=16, max_length=64)
    deadline: float | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)
    sig: str = ""

    @field_validator("id", "conversation")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not ENVELOPE_ID.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits and _.:- ")
        return value

    @field_validator("parent")
    @classmethod
    def _parent_shape(cls, value: str | None) -> str | None:
        if value is not None and not ENVELOPE_ID.fullmatch(value):
            raise ValueError("must be an envelope id")
        return value

    @field_validator("sender")
    @classmethod
    def _sender_shape(cls, value: str) -> str:
        if not AGENT_NAME.fullmatch(value):
            raise ValueError("must be an agent name: lower-case letters, digits, _ and -")
        return value

    @field_validator("traceparent")
    @classmethod
    def _traceparent_shape(cls, value: str) -> str:
        if not TRACEPARENT.fullmatch(value):
            raise ValueError("must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
        return value

    # -- calls -----------------------------------------------------------------------------

    def call_target(self) -> tuple[str, str]:
        """(agent, skill) of a call; ValueError if `target` is not `agent.skill`."""
        agent, _, skill = self.target.partition(".")
        if not AGENT_NAME.fullmatch(agent) or not SKILL_NAME.fullmatch(skill):
            raise ValueError(f"call target {self.target!r} is not of the form agent.skill")
        return agent, skill


def signing_bytes(raw: dict[str, Any]) -> bytes:
    """What the sender signs: the envelope's canonical form without `sig`."""
    return canonical({k: v for k, v in raw.items() if k != "sig"})


def seal(fields: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """Complete an envelope's fields (ts, nonce) and sign it; returns the wire dict."""
    raw = dict(fields)
    raw.setdefault("v", 1)
    raw["ts"] = round(time.time(), 6)
    raw["nonce"] = secrets.token_hex(16)
    raw.pop("sig", None)
    raw["sig"] = sign(private, signing_bytes(raw))
    return raw


def check_signature(raw: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """Whether `raw`, an envelope read from JSON text, carries its sender's signature."""
    sig = raw.get("sig")
    return isinstance(sig, str) and verify(public, signing_bytes(raw), sig)


# -- A2A-shaped bodies --------------------------------------------------------------------

def call_body(data: Any, message_id: str) -> dict[str, Any]:
    """An A2A Message (1.0 ProtoJSON shape) carrying `data` as one data part."""
    return {"message": {"messageId": message_id, "role": "ROLE_USER", "parts": [{"data": data}]}}


def event_body(data: Any, message_id: str) -> dict[str, Any]:
    """An event's body: an A2A Message from the publishing agent."""
    return {"message": {"messageId": message_id, "role": "ROLE_AGENT", "parts": [{"data": data}]}}


def reply_body(data: Any, message_id: str) -> dict[str, Any]:
    return {"message": {"messageId": message_id, "role": "ROLE_AGENT", "parts": [{"data": data}]}}


def error_body(stage: str, code: str, reason: str, rule: str | None = None) -> dict[str, Any]:
    return {"error": {"stage": stage, "code": code, "reason": reason, "rule": rule}}


def body_data(body: dict[str, Any]) -> Any:
    """The payload of an A2A-shaped body: the single data part's value, the text of a single
    text part, or the list of parts when there are several."""
    message = body.get("message")
    if not isinstance(message, dict):
        raise ValueError("body has no A2A message")
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ValueError("the A2A message has no parts")
    if len(parts) == 1:
        part = parts[0]
        if isinstance(part, dict) and "data" in part:
            return part["data"]
        if isinstance(part, dict) and "text" in part:
            return part["text"]
    return parts
