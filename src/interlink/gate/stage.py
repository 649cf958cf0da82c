"""A gate stage is a small object with a name and one async method that returns a verdict:
None to continue, or a `GateDenied` value to stop. Stages keep no per-envelope state."""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import GateDenied
from .context import GateContext


class Stage(Protocol):
    name: str

    async def __call__(self, ctx: GateContext) -> GateDenied | None: ...


def deny(stage: str, code: str, reason: str, rule: str | None = None,
         detail: dict[str, Any] | None = None) -> GateDenied:
    return GateDenied(stage, code, reason, rule, detail)
