"""Property-based fuzzing (hypothesis) of what parses input from outside: strict JSON, the
whole gate (every stage, with envelopes signed by an enrolled agent so mutations reach past
authenticate), and the SDK's frame parser. The property: whatever arrives, the answer is a
value or a refusal naming its stage — never an exception, never an `internal` refusal.

More examples: `HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/unit/test_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlink import codec, strictjson
from interlink.envelope import KINDS, new_id, new_traceparent, seal
from interlink.gate import Session
from interlink.home import MeshHome
from interlink.hub import Hub
from interlink.identity import CredentialFile, canonical
from interlink.sdk import Connection

settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_strict_json_answers_a_value_or_says_why(raw: bytes) -> None:
    try:
        strictjson.loads(raw)
    except strictjson.BadJSON as exc:
        assert str(exc)


@given(json_values)
def test_strict_json_reads_back_what_json_writes(value: Any) -> None:
    assert strictjson.loads(json.dumps(value)) == value


@given(json_values)
def test_the_fast_codec_keeps_every_value_and_its_signed_form(value: Any) -> None:
    """What the hub parses and writes must sign as the sender signed it: an integer beyond 64
    bits that came back a float would have a different canonical form (orjson alone does that)."""
    for text in (codec.dumps(value), json.dumps(value).encode()):
        for parse in (codec.loads, strictjson.loads):
            assert canonical(parse(text)) == canonical(value)


@given(json_values | st.floats(allow_nan=False, allow_infinity=False))
def test_the_fast_signed_form_is_pythons_sorted_json(value: Any) -> None:
    """Signatures and audit hashes are over Python's sorted JSON (what every earlier version
    wrote); orjson writes it faster where it writes the same bytes. One byte apart and every
    signature fails."""
    python = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                        allow_nan=False).encode()
    assert canonical(value) == python
    assert canonical(json.loads(json.dumps(value))) == python


nan_anywhere = st.recursive(
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    lambda inner: st.lists(inner | json_values, min_size=1, max_size=3).map(
        lambda items: [*items, float("nan")])
    | st.dictionaries(st.text(max_size=4), inner, min_size=1, max_size=3).map(
        lambda d: {**d, "p": None}), max_leaves=6)


@given(nan_anywhere)
def test_nothing_holding_nan_or_infinity_has_a_signed_form(value: Any) -> None:
    """orjson writes NaN as null: its form must not be taken for such a value."""
    with pytest.raises(ValueError):
        canonical(value)


def test_the_fast_signed_form_agrees_at_every_decade_of_floats() -> None:
    """Where Python and orjson switch between fixed and exponent notation."""
    rng = random.Random(7)
    numbers = [m * 10.0**e for e in range(-323, 308)
               for m in (1.0, 1.5, 5.0, 9.999999999999999, 1.0000000000000002)]
    numbers += [rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-8, 20) for _ in range(20_000)]
    numbers += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
                for _ in range(20_000)]
    for number in (n for n in numbers if math.isfinite(n)):
        for value in (number, -number, {"ts": number, "list": [number, 1, "x", None]}):
            python = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
            assert canonical(value) == python, value


@pytest.mark.parametrize("number", [2**64, 2**70, -(2**63) - 1, 10**40])
def test_integers_beyond_64_bits_stay_integers(number: int) -> None:
    text = codec.dumps({"n": number})
    assert codec.loads(text)["n"] == number and isinstance(codec.loads(text)["n"], int)
    assert isinstance(strictjson.loads(text)["n"], int)


def test_strict_json_refuses_lone_surrogates_and_counts_no_brackets_in_strings() -> None:
    with pytest.raises(strictjson.BadJSON, match="surrogate"):
        strictjson.loads(b'{"text": "\\ud800"}')
    in_strings = json.dumps({"items": [{"text": "[[[[{{{{" * 20}] * 100})
    assert len(strictjson.loads(in_strings)["items"]) == 100
    with pytest.raises(strictjson.BadJSON, match="nested"):
        strictjson.loads('{"a": "]]]]", "b": ' + "[" * 65 + "]" * 65 + "}")


@given(st.integers(min_value=65, max_value=3000))
def test_strict_json_bounds_nesting(depth: int) -> None:
    with pytest.raises(strictjson.BadJSON, match="nested"):
        strictjson.loads("[" * depth + "]" * depth)


@given(st.sampled_from(["1e400", "-1e999", "NaN", "Infinity", "-Infinity"]))
def test_strict_json_refuses_what_is_not_a_finite_number(number: str) -> None:
    with pytest.raises(strictjson.BadJSON):
        strictjson.loads(f'{{"x": {number}}}')
    assert math.isfinite(strictjson.loads('{"x": 1e300}')["x"])


def _sdk_credential() -> CredentialFile:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlink.identity import HubKey, b64e
    hub, private = HubKey.generate(), Ed25519PrivateKey.generate()
    return CredentialFile(credential=hub.issue("alice", private.public_key()),
                          private_key=b64e(private.private_bytes_raw()),
                          hub_url="ws://127.0.0.1:1/ws", hub_public_key=hub.public_b64)


SDK_CREDENTIAL = _sdk_credential()

# -- the gate --------------------------------------------------------------------------------

class Gate:
    """A real hub (embedded store, every stage) driven frame by frame on one event loop."""

    def __init__(self, root: Path) -> None:
        from ..helpers import make_home
        self.home: MeshHome = make_home(root, {"alice": ["bob.*"], "bob": []})
        self.home.grant("alice", publish=["news.*"], subscribe=["news.>"],
                        memory={"notes": "read-write"})
        self.cred = CredentialFile.load(self.home.credential_path("alice"))
        self.loop = asyncio.new_event_loop()
        self.hub = Hub(self.home)
        self.loop.run_until_complete(self.hub.__aenter__())
        self.sent: list[dict[str, Any]] = []

        async def send(frame: dict[str, Any]) -> None:
            self.sent.append(frame)

        self.session = Session(id=new_id(), remote="fuzz", challenge="c" * 32, send=send)
        hello = seal({"id": new_id(), "kind": "hello", "sender": "alice", "target": "hub",
                      "conversation": new_id(), "traceparent": new_traceparent(),
                      "body": {"credential": self.cred.credential.model_dump(),
                               "challenge": self.session.challenge, "serves": False}},
                     self.cred.private())
        ctx = self.run(json.dumps(hello).encode())
        assert ctx.denial is None, ctx.denial

    def run(self, raw: bytes) -> Any:
        return self.loop.run_until_complete(self.hub.handle(raw, self.session))

    def close(self) -> None:
        self.loop.run_until_complete(self.hub.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    gate = Gate(tmp_path_factory.mktemp("fuzz") / "home")
    yield gate
    gate.close()


def _no_internal(ctx: Any) -> None:
    if ctx.denial is not None:
        assert ctx.denial.code != "internal", ctx.denial.to_dict()
        assert ctx.denial.reason


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.binary(max_size=400))
def test_any_frame_is_refused_at_decode_or_read(gate: Gate, raw: bytes) -> None:
    _no_internal(gate.run(raw))


FIELDS = ["id", "kind", "sender", "target", "conversation", "traceparent", "parent", "hops",
          "deadline", "labels", "body", "v"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), changes=st.dictionaries(st.sampled_from(FIELDS),
                                                             json_values, max_size=3),
       body=st.dictionaries(st.sampled_from(["op", "key", "value", "rights", "ttl", "seq",
                                             "action", "decision", "prefix", "expect",
                                             "message", "durable", "level", "schema"]),
                            json_values, max_size=4))
def test_signed_mutated_envelopes_reach_every_stage_without_internal_errors(
        gate: Gate, kind: str, changes: dict[str, Any], body: dict[str, Any]) -> None:
    """Envelopes of every kind, signed by an enrolled agent, with fields and body mutated:
    each stage answers with a refusal naming itself, or accepts."""
    target = {"call": "bob.echo", "publish": "news.today", "subscribe": "news.>",
              "memory": "notes", "ack": "c1", "delegate": "bob", "approve": new_id(),
              "endorse": "bob", "declassify": "bob", "schema": "news.today"}.get(kind, "hub")
    fields: dict[str, Any] = {"id": new_id(), "kind": kind, "sender": "alice",
                              "target": target, "conversation": new_id(),
                              "traceparent": new_traceparent(), "body": body}
    fields.update({k: v for k, v in changes.items() if k != "sender"})
    try:
        raw = json.dumps(seal(fields, gate.cred.private())).encode()
    except (TypeError, ValueError):
        return  # not even JSON-able: the decode property above covers raw bytes
    _no_internal(gate.run(raw))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=st.dictionaries(st.sampled_from(["op", "id", "env", "error", "sub", "seq",
                                              "watch", "labels", "origin", "kind"]),
                             json_values, max_size=5),
       op=st.sampled_from(["accepted", "refused", "deliver", "failed", "event", "memory",
                           "nonsense"]))
def test_the_sdk_frame_parser_survives_anything_a_hub_sends(frame: dict[str, Any],
                                                            op: str) -> None:
    """A frame from a broken or hostile hub never raises out of the SDK's parser."""
    connection = Connection(SDK_CREDENTIAL)
    connection._on_frame({**frame, "op": op})
