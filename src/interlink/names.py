"""Names the mesh routes by: topics and subscription patterns (and when a granted pattern
covers a wanted one), and shared-memory namespaces and keys.

A topic is 1-16 dot-separated tokens of letters, digits, `_` and `-` (`blog.drafts.created`).
A pattern may use NATS wildcards: `*` for exactly one token, `>` (last) for one or more.
Topics starting with `$` belong to the hub: `$dead.<consumer>` holds a consumer's dead letters.
Agents cannot publish to them; subscribing needs a grant that names `$dead` explicitly.

    topic_error("blog..x")                    "…empty token…"
    covers("blog.>", "blog.drafts.*")        True   (every topic the second matches, the first does)
    covers("blog.*", "blog.>")               False

A memory namespace is 1-64 lower-case letters, digits, `_`, `-` and `.` (`blog`, `team.alpha`);
a key is 1-256 letters, digits and `-_.=:@/` (slashes make hierarchy: `drafts/2026/intro`).
"""

from __future__ import annotations

import re

from .store.subjects import subject_matches

MAX_TOPIC_LENGTH = 255
MAX_TOKENS = 16
DEAD_PREFIX = "$dead"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_CONSUMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MEMORY_READS = ("get", "list", "history", "watch", "unwatch")
MEMORY_WRITES = ("put", "update", "delete")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_KEY = re.compile(r"[A-Za-z0-9\-_.=:@/]{1,256}")
_PREFIX = re.compile(r"[A-Za-z0-9\-_.=:@/]{0,256}")

__all__ = ["DEAD_PREFIX", "MEMORY_READS", "MEMORY_WRITES", "consumer_error", "covers",
           "dead_letter_topic", "key_error",
           "matches", "namespace_error", "pattern_error", "prefix_error", "topic_error"]


def _shape_error(text: str, what: str, *, wildcards: bool) -> str | None:
    if not isinstance(text, str) or not text:
        return f"a {what} must be a non-empty string"
    if len(text) > MAX_TOPIC_LENGTH:
        return f"the {what} is {len(text)} characters; at most {MAX_TOPIC_LENGTH}"
    tokens = text.split(".")
    if len(tokens) > MAX_TOKENS:
        return f"the {what} {text!r} has {len(tokens)} tokens; at most {MAX_TOKENS}"
    for i, token in enumerate(tokens):
        if token == "":
            return f"the {what} {text!r} has an empty token (two dots, or a dot at an end)"
        if wildcards and token == "*":
            continue
        if wildcards and token == ">":
            if i != len(tokens) - 1:
                return f"in the {what} {text!r}, '>' may only be the last token"
            continue
        if i == 0 and token == DEAD_PREFIX:
            continue
        if not _TOKEN.fullmatch(token):
            hint = ("wildcards are for subscriptions, not for publishing"
                    if token in ("*", ">") else "use letters, digits, _ and - between dots")
            return f"the {what} {text!r} has a bad token {token!r}: {hint}"
    return None


def topic_error(topic: str) -> str | None:
    """Why `topic` is not a topic an agent may publish to, or None."""
    problem = _shape_error(topic, "topic", wildcards=False)
    if problem is None and topic.split(".")[0] == DEAD_PREFIX:
        return f"topics under {DEAD_PREFIX}. belong to the hub (dead letters); publish elsewhere"
    return problem


def pattern_error(pattern: str) -> str | None:
    """Why `pattern` is not a subscription pattern, or None."""
    return _shape_error(pattern, "pattern", wildcards=True)


def consumer_error(name: str) -> str | None:
    if not isinstance(name, str) or not _CONSUMER.fullmatch(name):
        return (f"consumer name {name!r} must be 1-64 letters, digits, _ and -, starting with a "
                "letter or digit")
    return None


def dead_letter_topic(consumer: str) -> str:
    return f"{DEAD_PREFIX}.{consumer}"


def matches(pattern: str, topic: str) -> bool:
    """Whether `pattern` matches `topic` (`$` topics only by a pattern that names them)."""
    if topic.startswith("$") and not pattern.startswith("$"):
        return False
    return subject_matches(pattern, topic)


def covers(granted: str, wanted: str) -> bool:
    """Whether every topic `wanted` matches is matched by `granted` (both patterns)."""
    if wanted.startswith("$") and not granted.startswith("$"):
        return False
    have, want = granted.split("."), wanted.split(".")
    for i, token in enumerate(have):
        if token == ">":
            return len(want) > i
        if i >= len(want):
            return False
        if want[i] == ">":
            return False  # the wanted pattern reaches further than this grant does
        if token != "*" and token != want[i]:  # a literal grant covers only that literal
            return False
    return len(have) == len(want)


def namespace_error(namespace: str) -> str | None:
    """Why `namespace` is not a memory namespace, or None."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        return (f"memory namespace {namespace!r} must be 1-64 lower-case letters, digits, _, - "
                "and ., starting with a letter or digit (e.g. 'blog', 'team.alpha')")
    return None


def key_error(key: str) -> str | None:
    """Why `key` is not a memory key, or None."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return (f"memory key {key!r} must be 1-256 letters, digits and -_.=:@/ "
                "(e.g. 'style-guide', 'drafts/2026/intro')")
    if key.startswith("/") or "//" in key:
        return f"memory key {key!r} has an empty path segment"
    return None


def prefix_error(prefix: str) -> str | None:
    """Why `prefix` is not a key prefix ('' means every key), or None."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        return (f"key prefix {prefix!r} must be at most 256 letters, digits and -_.=:@/ "
                "('' for every key)")
    return None
