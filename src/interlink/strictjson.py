"""Strict JSON for everything that arrives from outside: the gate's decode stage and every edge
parse bodies with `loads`, so the same input is refused the same way everywhere, with a reason
a sender can act on, and never surfaces as an internal error.

Refused: text that is not JSON or not UTF-8, `NaN` / `Infinity` (not JSON, and poison whatever
stores them), numbers too large for a float (`1e400` would become infinity), and nesting
deeper than `MAX_DEPTH` (Python's parser would otherwise recurse until it fails).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from . import codec

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted from outside."""


class BadJSON(ValueError):
    """Input that is not acceptable JSON; the message says why."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"the number {text[:40]} is too large (it overflows to infinity); send "
                      "finite numbers")
    return value


def _constant(name: str) -> Any:
    raise BadJSON(f"{name} is not JSON; send finite numbers")


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` as strict JSON, or raise BadJSON saying why not."""
    fast_refusal = None
    try:  # the fast parser refuses what this module refuses; the slow one says why
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fast_refusal = str(exc)
    else:
        if _too_deep(raw, max_depth):
            raise BadJSON(f"the JSON is nested more than {max_depth} levels deep")
        if not codec.has_wide_float(value):
            return value
        fast_refusal = None  # an integer beyond 64 bits: the slow parser keeps its digits
    if isinstance(raw, bytes | bytearray):
        try:
            raw = raw.decode()
        except UnicodeDecodeError as exc:
            raise BadJSON(f"the text is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    too_deep = _too_deep(raw, max_depth)
    if too_deep:
        raise BadJSON(f"the JSON is nested more than {max_depth} levels deep")
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_constant)
    except BadJSON:
        raise
    except RecursionError:
        raise BadJSON(f"the JSON is nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise BadJSON(f"not valid JSON ({exc})") from None
    if fast_refusal is not None:  # read by the lenient parser only: lone surrogates
        raise BadJSON(f"not valid JSON ({fast_refusal}); send UTF-8 text")
    return value


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _too_deep(raw: bytes | str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (strings taken out and the
    brackets found by regular expressions, so only the brackets are walked in Python)."""
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= limit:
            return False
        text = raw
    else:
        if raw.count(b"[") + raw.count(b"{") <= limit:
            return False
        text = raw.decode()
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False
