"""The SDK's wire protocol, hub → agent: every frame a hub sends a connected agent, one tagged
union on `op`. The hub, its services and its edges build frames only with the functions here,
and the SDK reads them only through `read`, so both sides agree by construction. (Agent → hub
is a signed envelope: `envelope.py`.)

    challenge   the first frame of a connection: answer it in a signed hello
    accepted    an envelope passed the gate (and was committed); service fields added
    refused     an envelope was refused: {stage, code, reason, rule}
    deliver     a call or a reply, as signed by its origin, with the origin's credential and the
                label the hub computed
    failed      a call ended without a reply (timeout, suspended target, ...)
    event       an event for a subscription, as signed by its publisher
    memory      a change to watched shared memory
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, cast

Op = Literal["challenge", "accepted", "refused", "deliver", "failed", "event", "memory"]


class FrameError(ValueError):
    """A frame this side cannot read: not an object, an unknown `op`, a missing field."""


class Challenge(TypedDict):
    op: Literal["challenge"]
    challenge: str
    hub: str
    max_envelope_bytes: NotRequired[int]


class Accepted(TypedDict):
    op: Literal["accepted"]
    id: str
    kind: str
    # plus what the service answered: `seq`, `topic_seq`, `revision`, `entries`, ...


class Refused(TypedDict):
    op: Literal["refused"]
    id: str | None
    kind: NotRequired[str | None]
    error: dict[str, Any]


class Deliver(TypedDict):
    op: Literal["deliver"]
    env: dict[str, Any]
    origin: dict[str, Any] | None
    labels: NotRequired[dict[str, Any] | None]


class Failed(TypedDict):
    op: Literal["failed"]
    id: str
    error: dict[str, Any]


class EventFrame(TypedDict):
    op: Literal["event"]
    sub: str
    seq: int
    topic: str
    topic_seq: int
    deliveries: int
    durable: str | None
    ts: float
    env: dict[str, Any]
    origin: dict[str, Any]
    labels: dict[str, Any]
    dead: NotRequired[dict[str, Any]]


class MemoryFrame(TypedDict):
    op: Literal["memory"]
    watch: str
    namespace: str
    key: str
    revision: int
    change: str
    value: Any
    by: str | None
    ts: float
    labels: dict[str, Any] | None


Frame = Challenge | Accepted | Refused | Deliver | Failed | EventFrame | MemoryFrame

REQUIRED: dict[str, tuple[str, ...]] = {
    "challenge": ("challenge", "hub"),
    "accepted": ("id",),
    "refused": ("error",),
    "deliver": ("env", "origin"),
    "failed": ("id", "error"),
    "event": ("sub", "seq", "topic", "env", "origin"),
    "memory": ("watch", "key", "revision"),
}
"""What a reader needs of each frame (the rest has defaults)."""


def challenge(challenge: str, hub: str, max_envelope_bytes: int) -> Challenge:
    return {"op": "challenge", "challenge": challenge, "hub": hub,
            "max_envelope_bytes": max_envelope_bytes}


def accepted(env_id: str, kind: str, answer: dict[str, Any]) -> Accepted:
    frame: dict[str, Any] = {"op": "accepted", "id": env_id, "kind": kind, **answer}
    return cast(Accepted, frame)


def refused(env_id: str | None, kind: str | None, error: dict[str, Any]) -> Refused:
    return {"op": "refused", "id": env_id, "kind": kind, "error": error}


def deliver(env: dict[str, Any], origin: dict[str, Any] | None,
            labels: dict[str, Any] | None) -> Deliver:
    return {"op": "deliver", "env": env, "origin": origin, "labels": labels}


def failed(call_id: str, error: dict[str, Any]) -> Failed:
    return {"op": "failed", "id": call_id, "error": error}


def event(*, sub: str, seq: int, topic: str, topic_seq: int, deliveries: int,
          durable: str | None, ts: float, env: dict[str, Any], origin: dict[str, Any],
          labels: dict[str, Any], dead: dict[str, Any] | None = None) -> EventFrame:
    frame: EventFrame = {"op": "event", "sub": sub, "seq": seq, "topic": topic,
                         "topic_seq": topic_seq, "deliveries": deliveries, "durable": durable,
                         "ts": ts, "env": env, "origin": origin, "labels": labels}
    if dead:
        frame["dead"] = dead
    return frame


def memory(watch: str, entry: dict[str, Any]) -> MemoryFrame:
    """A watched change; `entry` is the service's entry dict (namespace, key, revision,
    change, value, by, ts, labels)."""
    frame: dict[str, Any] = {"op": "memory", "watch": watch, **entry}
    return cast(MemoryFrame, frame)


def read(frame: object) -> Frame:
    """A frame as received, checked: a JSON object with a known `op` and the fields a reader
    needs. FrameError says what is wrong (the SDK logs it and skips the frame)."""
    if not isinstance(frame, dict):
        raise FrameError(f"a frame is a JSON object, not {type(frame).__name__}")
    op = frame.get("op")
    if not isinstance(op, str) or op not in REQUIRED:
        raise FrameError(f"unknown frame op {op!r}")
    missing = [name for name in REQUIRED[op] if name not in frame]
    if missing:
        raise FrameError(f"a {op} frame without {', '.join(missing)}")
    return cast(Frame, frame)
