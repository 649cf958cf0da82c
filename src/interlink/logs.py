"""The hub's log, for people and for log shippers: one line per connection, disconnection and
refusal at INFO (agent, stage, code, rule), every accepted envelope at DEBUG, as text or as JSON
lines (`interlink serve --log-format json`)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

FIELDS = ("agent", "session", "kind", "target", "stage", "code", "rule", "envelope")
"""Structured fields a log record may carry (`log.info(..., extra={...})`)."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        data.update({k: getattr(record, k) for k in FIELDS if hasattr(record, k)})
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class ExpectedA2AErrors(logging.Filter):
    """a2a-sdk logs a traceback for every error an executor raises; a gate refusal turned into
    an A2A error is an answer, not a failure (the gate already logged it in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and type(exc).__module__.startswith("a2a.")
                    and "Error" in type(exc).__name__ and "Internal" not in type(exc).__name__)


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "uvicorn.error"):  # our own lines say more
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("a2a").addFilter(ExpectedA2AErrors())
    for name in ("a2a.server.agent_execution.active_task", "a2a.server.request_handlers"):
        logging.getLogger(name).addFilter(ExpectedA2AErrors())


@contextlib.contextmanager
def logged(logger: logging.Logger, what: str, level: int = logging.DEBUG) -> Iterator[None]:
    """Best-effort work (closing what may already be closed, parsing an optional extra): a
    failure is logged saying what was being done, and not raised. Nothing is swallowed
    silently."""
    try:
        yield
    except Exception as exc:
        logger.log(level, "%s failed: %r", what, exc)
