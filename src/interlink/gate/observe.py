"""observe: every gate decision, accepted or refused, becomes an audit record and an
OpenTelemetry span (a child of the span the envelope's `traceparent` names, so the crossing
sits in the sender's trace), with the gate's verdict and the GenAI attributes that fit."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Protocol

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..errors import GateDenied
from .context import GateContext
from .lookups import AuditSink

_PROPAGATOR = TraceContextTextMapPropagator()
OPERATIONS = {"call": "invoke_agent", "hello": "create_agent"}
"""GenAI operation names where one fits; other crossings are named by their kind."""

log = logging.getLogger("interlink.gate")


class Observe:
    name = "observe"

    def __init__(self, audit: AuditSink, *, tracer: Tracer | None = None,
                 spans: SpanSink | None = None) -> None:
        self.audit = audit
        self.tracer = tracer
        """An OpenTelemetry tracer, when spans also go to a collector (its provider hands
        them to the hub's trace store as well)."""
        self.spans = spans
        """Otherwise the hub's trace store alone, given each span as the same record
        directly (no span objects: a fifth of the cost on the hot path)."""

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        await self.audit.record_gate(ctx)
        if self.tracer is not None or self.spans is not None:
            _span(ctx, self.tracer, self.spans)
        _log_decision(ctx)
        return None


class SpanSink(Protocol):
    def keep(self, span: dict[str, Any]) -> None:
        """Keep one finished span (the trace store's record: ids, name, times, status,
        attributes)."""


def _span(ctx: GateContext, tracer: Tracer | None, spans: SpanSink | None) -> None:
    env, denial = ctx.env, ctx.denial
    attributes: dict[str, Any] = {"interlink.decision": "refused" if denial else "accepted",
                                  "interlink.session": ctx.session.id}
    if env is not None:
        agent = env.target.partition(".")[0] if env.kind == "call" else env.sender
        attributes.update({
            "gen_ai.operation.name": OPERATIONS.get(env.kind, env.kind),
            "gen_ai.agent.name": agent, "gen_ai.conversation.id": env.conversation,
            "interlink.kind": env.kind, "interlink.sender": env.sender,
            "interlink.target": env.target, "interlink.envelope.id": env.id,
            "interlink.hops": env.hops, "interlink.label": json.dumps(ctx.label.to_dict())})
        if env.labels:  # the label before the gate (declared) beside the one after it
            attributes["interlink.label.declared"] = json.dumps(env.labels)
        if env.parent:
            attributes["interlink.parent"] = env.parent
        usage = env.body.get("usage") if env.kind == "reply" else None
        if isinstance(usage, dict):
            for key in ("input_tokens", "output_tokens"):
                if isinstance(usage.get(key), int):
                    attributes[f"gen_ai.usage.{key}"] = usage[key]
            if isinstance(usage.get("tokens"), int | float):
                attributes["interlink.usage.tokens"] = usage["tokens"]
        name = f"{env.kind} {env.target}"
    else:
        name = "frame"
        attributes["interlink.frame.bytes"] = len(ctx.raw)
    attributes["interlink.gate.passed"] = list(ctx.passed)
    if denial is not None:
        attributes.update({"interlink.stage": denial.stage, "interlink.code": denial.code,
                           "interlink.reason": denial.reason[:500]})
        if denial.rule:
            attributes["interlink.rule"] = denial.rule
    elif ctx.rule:
        attributes["interlink.rule"] = ctx.rule
    error = f"{denial.stage}: {denial.code}" if denial is not None else None
    if tracer is not None:
        parent = _PROPAGATOR.extract({"traceparent": env.traceparent}) if env else None
        span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                 start_time=int(ctx.received * 1e9), attributes=attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
    elif spans is not None:
        _, trace_id, parent_id, _ = (env.traceparent.split("-") if env is not None
                                     else ("", os.urandom(16).hex(), None, ""))
        spans.keep({"trace_id": trace_id, "span_id": os.urandom(8).hex(),
                    "parent_id": parent_id, "name": name, "start": ctx.received,
                    "end": time.time(), "status": "ERROR" if error else "UNSET",
                    "error": error, "attributes": attributes})


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
