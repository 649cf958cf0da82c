"""The hub's own trace store: the spans of every crossing, kept in the store's `traces` log
(one message per conversation per flush, subject `conv.<conversation, base64url>`), for
`interlink trace`, `interlink tail` and the console — when no OpenTelemetry collector is
configured, and beside it when one is.

It is an OpenTelemetry span processor: the gate ends a span on the event loop, `on_end` keeps
it in memory, and the hub's ticker writes what was kept every `FLUSH_SECONDS` in one batch
(never a store write on the hot path). What is older than `hub.trace_retention_seconds` is
removed by the log itself (`max_age`).
"""

from __future__ import annotations

import base64
import logging
from collections import deque
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import codec
from ..policy import HubSettings
from ..store import Log, LogMessage, Store

log = logging.getLogger("interlink.traces")

TRACES_LOG = "traces"
FLUSH_SECONDS = 0.5
KEPT_AT_MOST = 100_000
"""Spans waiting for the store; past this the oldest go (said in the log), never the hub."""


async def traces_log(store: Store, settings: HubSettings) -> Log:
    """The trace store's log, opened with its settings (every opener states the same ones: a
    log's settings are stored for all its users)."""
    return await store.log(TRACES_LOG, dedup_window=0.0,
                           max_age=settings.trace_retention_seconds)


def conversation_subject(conversation: str) -> str:
    return "conv." + (base64.urlsafe_b64encode(conversation.encode()).decode().rstrip("=")
                      or "_")


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    context, parent = span.context, span.parent
    return {
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "start": (span.start_time or 0) / 1e9, "end": (span.end_time or 0) / 1e9,
        "status": span.status.status_code.name, "error": span.status.description,
        "attributes": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in (span.attributes or {}).items()},
    }


class TraceStore(SpanProcessor):
    def __init__(self, log_: Log) -> None:
        self.log = log_
        self._kept: deque[dict[str, Any]] = deque()
        self.dropped = 0

    @classmethod
    async def open(cls, store: Store, settings: HubSettings) -> TraceStore:
        return cls(await traces_log(store, settings))

    # -- the span processor ---------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.keep(span_dict(span))

    def keep(self, span: dict[str, Any]) -> None:
        """A finished span, as a record (the gate hands them here directly when no collector
        is configured)."""
        if len(self._kept) >= KEPT_AT_MOST:
            self._kept.popleft()
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 100_000 == 0:
                log.warning("%d spans dropped: the store takes them slower than they come",
                            self.dropped)
        self._kept.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    # -- writing ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write what was kept: one message per conversation."""
        if not self._kept:
            return
        spans, self._kept = self._kept, deque()
        by_conversation: dict[str, list[dict[str, Any]]] = {}
        for span in spans:
            conversation = str(span["attributes"].get("gen_ai.conversation.id", ""))
            by_conversation.setdefault(conversation, []).append(span)
        for conversation, batch in by_conversation.items():
            await self.log.append(conversation_subject(conversation),
                                  codec.dumps(batch))


def spans_of(messages: list[LogMessage]) -> list[dict[str, Any]]:
    """The spans in trace-log messages, in start order."""
    out: list[dict[str, Any]] = []
    for message in messages:
        try:
            out.extend(codec.loads(message.data))
        except ValueError:
            log.warning("trace message %d is not JSON; skipped", message.seq)
    return sorted(out, key=lambda s: s["start"])


async def conversation_spans(log_: Log, conversation: str) -> list[dict[str, Any]]:
    subject, found, start = conversation_subject(conversation), [], 1
    while batch := await log_.read(start, subject=subject, limit=500):
        found.extend(batch)
        start = batch[-1].seq + 1
    return spans_of(found)
