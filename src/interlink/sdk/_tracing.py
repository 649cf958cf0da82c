"""OpenTelemetry in the SDK: a skill or an event handler runs inside a span that continues the
trace its envelope carries (W3C `traceparent`), so an agent's own spans — its LLM calls, its
tools — nest under the call that caused them; and an envelope sent from inside carries the
current span, so the hub's span of it nests there too.

Spans go to whatever tracer provider the agent's process set up (`opentelemetry.trace`); with
none, nothing is recorded and envelopes carry the trace on as before (same trace id, new span
id), at no cost beyond a context switch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..envelope import TRACEPARENT, child_traceparent, new_traceparent

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("interlink.sdk")


@contextmanager
def handling(name: str, traceparent: str, attributes: dict[str, Any],
             kind: SpanKind = SpanKind.SERVER) -> Iterator[str]:
    """Run what is inside as the span `name`, a child of `traceparent`; yields the
    traceparent that envelopes sent from inside should carry."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield traceparent  # no provider in this process: nothing would be recorded
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent})
    with _TRACER.start_as_current_span(name, context=parent, kind=kind,
                                       attributes=attributes,
                                       record_exception=True) as span:
        yield _traceparent_of(span) or traceparent


def outgoing(traceparent: str | None) -> str:
    """The traceparent of an envelope sent now, in the trace it belongs to (`traceparent`'s
    when given): the current span when there is one in that trace — a recording one (the
    hub's span of the envelope becomes its child), or the context a library extracted from
    its caller (an MCP request's `_meta.traceparent`, say) — else that trace carried on with
    a new span id."""
    current = _traceparent_of(trace.get_current_span(), ambient=True)
    if current is not None and (traceparent is None
                                or current.split("-")[1] == traceparent.split("-")[1]):
        return current
    return child_traceparent(traceparent) if traceparent else new_traceparent()


def _traceparent_of(span: trace.Span, *, ambient: bool = False) -> str | None:
    """The span's traceparent if it records (or, `ambient`, if it is any valid context)."""
    if not (span.is_recording() or (ambient and span.get_span_context().is_valid)):
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    value = carrier.get("traceparent", "")
    return value if TRACEPARENT.fullmatch(value) else None
