"""JSON on the hot path: frames and envelopes as they go over the wire, call records as they go
into the log. orjson where it can (several times faster than the standard library, and strict:
no NaN or Infinity, no numbers that overflow a float, no lone surrogates), the standard library
for what orjson declines to write (integers beyond 64 bits). Both write compact JSON that any
parser reads back to the same values.

Not for what is signed or hashed: `identity.canonical` stays the one byte form of those (its
numbers are written as Python writes them, and changing that would break every signature and
audit chain already made).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
"""What `loads` raises for text that is not JSON (a `ValueError`)."""


def dumps(value: Any) -> bytes:
    """`value` as compact JSON, UTF-8. NaN and Infinity are written as null (orjson's way):
    what passes here came through strict JSON or was signed first, and neither lets them by."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which JSON allows
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()


def dumps_text(value: Any) -> str:
    """`value` as compact JSON text (for a WebSocket text frame)."""
    return dumps(value).decode()


def loads(raw: bytes | str) -> Any:
    """Parse JSON we made, or that a peer sent over a connection we hold (the hub's frames, an
    agent's frames after the gate's strict check). Raises `JSONDecodeError` (a ValueError)."""
    if not wide_integer(raw):
        return orjson.loads(raw)
    return json.loads(raw)


_WIDE = re.compile(rb"[0-9]{19}")
_WIDE_TEXT = re.compile(r"[0-9]{19}")


def wide_integer(raw: bytes | str) -> bool:
    """Whether the text may hold an integer of 19 digits or more: orjson reads those beyond 64
    bits as floats (losing digits, and changing what a signature covers), so the standard
    library parses such text. A run of 19 digits inside a string sends it that way too, which
    costs only time."""
    pattern = _WIDE_TEXT if isinstance(raw, str) else _WIDE
    return pattern.search(raw) is not None  # type: ignore[arg-type]
