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
from collections.abc import Callable
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
    value = orjson.loads(raw)
    return json.loads(raw) if has_wide_float(value) else value


WIDE = 9.2e18
"""orjson reads integers within 64 bits (down to -2**63, up to 2**64 - 1) as integers and
wider ones as floats; every such float is at least this large."""


def has_wide_float(value: Any) -> bool:
    """Whether orjson's reading of some text holds a float at least `WIDE` in size, which may
    be an integer it could not keep (losing digits, and changing what a signature covers):
    then the standard library reads the text again."""
    return any_float(value, lambda number: not -WIDE < number < WIDE)


def any_float(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether a float in `value` (through dicts, lists and tuples) passes `test`. A walk over
    the values, not the text: a 64 KiB string is one step (a regular expression over the text
    took a millisecond)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is float and test(item):
            return True
    return False
