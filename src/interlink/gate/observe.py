"""observe: every gate decision, accepted or refused, becomes an audit record."""

from __future__ import annotations

import logging

from ..errors import GateDenied
from .context import GateContext
from .lookups import AuditSink

log = logging.getLogger("interlink.gate")


class Observe:
    name = "observe"

    def __init__(self, audit: AuditSink) -> None:
        self.audit = audit

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        await self.audit.record_gate(ctx)
        _log_decision(ctx)
        return None


def _log_decision(ctx: GateContext) -> None:
    """One line per refusal at INFO (who, what, stage, code, rule); accepted ones at DEBUG."""
    env, denial = ctx.env, ctx.denial
    who = env.sender if env else (ctx.session.agent or ctx.session.remote)
    fields = {"agent": who, "session": ctx.session.id, "kind": env.kind if env else None,
              "target": env.target if env else None, "envelope": env.id if env else None}
    if denial is not None:
        log.info("refused %s %s → %s at %s (%s): %s%s", fields["kind"] or "frame", who,
                 fields["target"] or "?", denial.stage, denial.code, denial.reason,
                 f" [rule: {denial.rule}]" if denial.rule else "",
                 extra={**fields, "stage": denial.stage, "code": denial.code,
                        "rule": denial.rule})
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("accepted %s %s → %s", fields["kind"], who, fields["target"],
                  extra={**fields, "rule": ctx.rule})
