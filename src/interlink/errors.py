"""Every error Interlink raises, in one tree.

    InterlinkError                 anything Interlink raises on purpose
    ├── UsageError                 the library used out of order (also a RuntimeError)
    ├── ConfigError                a mesh home, policy or credential file is missing or malformed
    │   └── NotAuthenticated       (edges.bearer) no usable bearer token
    ├── LabelError                 (labels) a label that does not parse (also a ValueError)
    ├── DelegationError            (delegation) a token that does not verify or widens a right
    ├── GateDenied                 the hub's gate refused an envelope (stage, code, reason, rule)
    │   └── StaleRevision          (sdk) a CAS or `based_on` write saw the data move
    ├── StoreError                 the storage engine failed or refused
    │   ├── RevisionMismatch       compare-and-swap saw another revision (carries the current one)
    │   ├── KeyExists              create() on a key that already holds a value
    │   ├── NotFound               no such key / consumer / message
    │   └── StoreClosed            the store was closed; nothing more can be done with it
    ├── CallError                  a call did not produce a result
    │   ├── CallTimeout            the deadline passed before the target answered (retriable)
    │   ├── SkillFailed            the target's skill raised; the reason is the target's
    │   └── InputRequired          the skill asks a question before it can finish
    └── ConnectionLost             the hub connection broke (retriable)

Errors carry fields, not only strings, and their message says what happened, why, and what to do.
"""

from __future__ import annotations

from typing import Any


class InterlinkError(Exception):
    """Base of every error Interlink raises on purpose."""

    retriable: bool = False


class UsageError(InterlinkError, RuntimeError):
    """The library was used out of order (a call before `async with`, a skill declared after
    the agent started): the message says what to do first."""


class ConfigError(InterlinkError):
    """A mesh home, policy file or credential file is missing or malformed."""


class GateDenied(InterlinkError):
    """The hub's gate refused an envelope.

    `stage` is the gate stage that decided, `code` a stable machine-readable reason,
    `reason` a sentence for people, `rule` the policy rule that decided (if a rule did), and
    `detail` machine-readable facts for the sender (e.g. the current revision of a stale write).
    """

    def __init__(self, stage: str, code: str, reason: str, rule: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        self.stage = stage
        self.code = code
        self.reason = reason
        self.rule = rule
        self.detail = detail or {}
        super().__init__(self._text())

    def _text(self) -> str:
        text = f"refused at {self.stage} ({self.code}): {self.reason}"
        if self.rule:
            text += f" [rule: {self.rule}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"stage": self.stage, "code": self.code, "reason": self.reason,
                                "rule": self.rule}
        if self.detail:
            data["detail"] = self.detail
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDenied:
        detail = data.get("detail")
        return cls(
            str(data.get("stage", "?")),
            str(data.get("code", "?")),
            str(data.get("reason", "")),
            data.get("rule"),
            detail if isinstance(detail, dict) else None,
        )


class StoreError(InterlinkError):
    """The storage engine failed or refused an operation."""


class StoreClaimed(StoreError):
    """Another hub process holds the store (one hub per embedded store)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (its server is down or unreachable); the engine keeps
    trying to reconnect. Nothing was written: retry once it is back."""


class RevisionMismatch(StoreError):
    """Compare-and-swap failed: the key is at `current` (None when absent), not at `expected`."""

    def __init__(self, key: str, expected: int | None, current: int | None) -> None:
        self.key = key
        self.expected = expected
        self.current = current
        super().__init__(
            f"{key!r} is at revision {current}, not {expected}: re-read it and retry the update"
        )


class KeyExists(StoreError):
    """create() was asked for a key that already holds a value."""

    def __init__(self, key: str, current: int) -> None:
        self.key = key
        self.current = current
        super().__init__(f"{key!r} already exists (revision {current})")


class NotFound(StoreError):
    """No such key, consumer or message."""


class StoreClosed(StoreError):
    """The store was closed; open a new one."""


class CallError(InterlinkError):
    """A call did not produce a result."""

    def __init__(self, code: str, reason: str, *, call_id: str | None = None,
                 stage: str = "call", rule: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.call_id = call_id
        self.stage = stage
        self.rule = rule
        super().__init__(f"{code}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "code": self.code, "reason": self.reason, "rule": self.rule}


class CallTimeout(CallError):
    """The call's deadline passed before the target answered."""

    retriable = True


class SkillFailed(CallError):
    """The target agent's skill raised an error; `reason` is what it said."""


class InputRequired(CallError):
    """A skill needs more input before it can finish: raise it in a skill with the question;
    the caller gets it with `prompt` (at the A2A edge: the task goes to INPUT_REQUIRED, and
    the caller's next message on that task calls the skill again)."""

    def __init__(self, prompt: str, *, call_id: str | None = None) -> None:
        self.prompt = prompt
        super().__init__("input_required", prompt, call_id=call_id, stage="skill")


class ConnectionLost(InterlinkError):
    """The connection to the hub broke; calls in flight can be retried with the same id."""

    retriable = True
    reason_short: str = ""
    """Why, in a few words (e.g. "connection refused"), when the hub could not be reached."""
