"""What every engine checks the same way before touching its storage: names of logs, buckets
and consumers, keys and key prefixes, values, headers and time-to-live. An engine may allow
less (its own limits), never more, so a store's contents move between engines."""

from __future__ import annotations

import re

from interlink.errors import StoreError
from interlink.store.subjects import check_filter, check_subject

_NAME = re.compile(r"[^\s.*>/\\\x00-\x1f\x7f]{1,255}")
_KEY = re.compile(r"[A-Za-z0-9\-_.=/:@]{1,512}")
_PREFIX = re.compile(r"[A-Za-z0-9\-_.=/:@]{0,512}")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise StoreError(
            f"invalid {kind} name {name!r}: use 1-255 printable characters without whitespace, "
            "'.', '*', '>' or slashes")
    return name


def check_key(key: str) -> str:
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise StoreError(
            f"invalid key {key!r}: use 1-512 letters, digits or '-_.=/:@'")
    return key


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise StoreError(
            f"invalid key prefix {prefix!r}: use up to 512 letters, digits or '-_.=/:@'")
    return prefix


def as_bytes(what: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise StoreError(f"{what} must be bytes, not {type(value).__name__}")


def check_headers(headers: dict[str, str] | None) -> dict[str, str]:
    headers = dict(headers or {})
    for name, value in headers.items():
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise StoreError(f"invalid header {name!r}: {value!r}: names and values are strings")
    return headers


def check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not ttl > 0:
        raise StoreError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return ttl


def check_consumer(name: str, filter: str, ack_wait: float, max_deliver: int,
                   dead_letter: str | None, deliver: str) -> None:
    """A consumer's settings, as `Log.consumer` takes them."""
    check_name("consumer", name)
    check_filter(filter)
    if dead_letter is not None:
        check_subject(dead_letter)
    if not ack_wait > 0:
        raise StoreError(f"ack_wait must be a positive number of seconds, not {ack_wait!r}")
    if not (isinstance(max_deliver, int) and (max_deliver > 0 or max_deliver == -1)):
        raise StoreError(f"max_deliver must be positive or -1 (unlimited), "
                         f"not {max_deliver!r}")
    if deliver not in ("all", "new"):
        raise StoreError(f"deliver must be 'all' or 'new', not {deliver!r}")


def check_expect_last(expect_last: int | None) -> None:
    if expect_last is not None and (not isinstance(expect_last, int)
                                    or isinstance(expect_last, bool) or expect_last < 0):
        raise StoreError(f"expect_last must be a sequence >= 0 or None, not {expect_last!r}")
