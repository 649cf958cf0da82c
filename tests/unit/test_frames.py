"""The hub → agent protocol in one place: every frame the hub builds is one the SDK reads, and
what the SDK cannot read is refused with what is wrong."""

from __future__ import annotations

import json

import pytest

from interlink import frames

BUILT = [
    frames.challenge("c0ffee", "hub-1", 1 << 20),
    frames.accepted("e1", "publish", {"seq": 3, "topic_seq": 1}),
    frames.refused("e2", "call", {"stage": "authorize", "code": "not_granted"}),
    frames.refused(None, None, {"stage": "decode", "code": "bad_json"}),
    frames.deliver({"id": "c1", "kind": "call"}, {"agent": "a"}, {"level": "public"}),
    frames.failed("c1", {"code": "timeout"}),
    frames.event(sub="s1", seq=9, topic="blog.x", topic_seq=2, deliveries=1, durable=None,
                 ts=1.0, env={"id": "e"}, origin={"agent": "a"}, labels={}),
    frames.memory("w1", {"namespace": "blog", "key": "k", "revision": 4, "change": "put",
                         "value": 1, "by": "a", "ts": 1.0, "labels": None}),
]


@pytest.mark.parametrize("frame", BUILT, ids=lambda f: f["op"])
def test_every_built_frame_reads_back_the_same(frame: frames.Frame) -> None:
    assert frames.read(json.loads(json.dumps(frame))) == frame


def test_the_ops_are_exactly_the_documented_ones() -> None:
    assert {f["op"] for f in BUILT} == set(frames.REQUIRED)


@pytest.mark.parametrize(("raw", "why"), [
    ([1, 2], "JSON object"), ("deliver", "JSON object"), ({"id": "x"}, "unknown frame op"),
    ({"op": "shout"}, "unknown frame op"), ({"op": 3}, "unknown frame op"),
    ({"op": "deliver", "env": {}}, "without origin"),
    ({"op": "failed", "error": {}}, "without id"),
    ({"op": "event", "sub": "s", "seq": 1, "topic": "t"}, "without env, origin"),
])
def test_what_cannot_be_read_is_refused_saying_why(raw: object, why: str) -> None:
    with pytest.raises(frames.FrameError, match=why):
        frames.read(raw)


def test_a_dead_letter_says_why_and_a_live_event_has_no_dead_field() -> None:
    dead = frames.event(sub="s", seq=1, topic="$dead.c", topic_seq=1, deliveries=5,
                        durable="c", ts=0.0, env={}, origin={}, labels={},
                        dead={"reason": "max_deliver"})
    assert dead["dead"] == {"reason": "max_deliver"}
    assert "dead" not in BUILT[6]
