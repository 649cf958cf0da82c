"""observe: every gate decision, accepted or refused, becomes an audit record."""

from __future__ import annotations

import logging
from typing import Protocol

from ..errors import GateDenied
from .context import GateContext

log = logging.getLogger("interlink.gate")


class AuditSink(Protocol):
    async def record_gate(self, ctx: GateContext) -> None: ...


class Observe:
    name = "observe"

    def __init__(self, audit: AuditSink) -> None:
        self.audit = audit

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        await self.audit.record_gate(ctx)
        if ctx.denial is not None:
            env = ctx.env
            log.info("refused %s from %s: %s", env.kind if env else "frame",
                     env.sender if env else ctx.session.remote, ctx.denial)
        return None
