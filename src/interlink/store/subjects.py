"""Subjects and subject filters, in the NATS grammar.

A subject is one or more non-empty tokens separated by `.`; a token holds no whitespace, no
control character and no wildcard. A filter is a subject in which a whole token may be `*`
(exactly one token) and the last token may be `>` (one or more tokens).

    subject_matches("orders.*", "orders.eu")        True
    subject_matches("orders.>", "orders.eu.paid")   True
    subject_matches("orders.>", "orders")           False
"""

from __future__ import annotations

import re

from interlink.errors import StoreError

_TOKEN = re.compile(r"[^\s.*>\x00-\x1f\x7f]+")


def _plain_token(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def valid_subject(subject: str) -> bool:
    """Whether `subject` is a concrete subject (no wildcards)."""
    return isinstance(subject, str) and all(_plain_token(t) for t in subject.split("."))


def valid_filter(pattern: str) -> bool:
    """Whether `pattern` is a subject filter: tokens, `*` tokens, and an optional final `>`."""
    if not isinstance(pattern, str):
        return False
    tokens = pattern.split(".")
    if tokens[-1] == ">":
        tokens.pop()
    return all(t == "*" or _plain_token(t) for t in tokens)


def check_subject(subject: str) -> str:
    """Return `subject` if valid, else raise StoreError saying why."""
    if not valid_subject(subject):
        raise StoreError(
            f"invalid subject {subject!r}: use non-empty dot-separated tokens without "
            "whitespace or wildcards, e.g. 'orders.eu.paid'")
    return subject


def check_filter(pattern: str) -> str:
    """Return `pattern` if it is a valid filter, else raise StoreError saying why."""
    if not valid_filter(pattern):
        raise StoreError(
            f"invalid subject filter {pattern!r}: use dot-separated tokens where a whole token "
            "may be '*' and the last token may be '>', e.g. 'orders.*.paid' or 'orders.>'")
    return pattern


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the filter `pattern` matches the concrete `subject` (neither is validated)."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for i, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or (want != "*" and want != tokens[i]):
            return False
    return len(wanted) == len(tokens)
