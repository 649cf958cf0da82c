"""Envelopes: signing covers every field, shapes are checked, bodies are A2A-shaped."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from interlink.envelope import (
    Envelope,
    body_data,
    call_body,
    check_signature,
    new_id,
    new_traceparent,
    seal,
)
from interlink.identity import HubKey, new_agent_key


def sealed(**over: object) -> dict[str, object]:
    private, _ = new_agent_key()
    fields = {"id": new_id(), "kind": "call", "sender": "drafter", "target": "editor.review",
              "conversation": new_id(), "traceparent": new_traceparent(),
              "body": call_body({"x": 1}, "m1"), **over}
    return seal(fields, private) | {"_key": private.public_key()}  # type: ignore[operator]


def test_signature_covers_every_field() -> None:
    """Changing any signed field after sealing breaks the signature."""
    raw = sealed()
    key = raw.pop("_key")
    assert check_signature(raw, key)  # type: ignore[arg-type]
    for field, value in [("target", "editor.delete"), ("hops", 5), ("sender", "ideator"),
                         ("labels", {"level": "public"}), ("ts", 1.0)]:
        tampered = {**raw, field: value}
        assert not check_signature(tampered, key), field  # type: ignore[arg-type]


def test_shape_is_checked() -> None:
    """Bad ids, senders, traceparents and unknown fields are refused by the model."""
    raw = sealed()
    raw.pop("_key")
    Envelope.model_validate(raw)
    for field, value in [("sender", "Not An Agent"), ("traceparent", "nope"),
                         ("id", "has spaces"), ("kind", "teleport"), ("hops", -1)]:
        with pytest.raises(ValidationError):
            Envelope.model_validate({**raw, field: value})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**raw, "extra": 1})


def test_call_target_parsing() -> None:
    """A call target is agent.skill; anything else is an error."""
    raw = sealed()
    raw.pop("_key")
    assert Envelope.model_validate(raw).call_target() == ("editor", "review")
    with pytest.raises(ValueError):
        Envelope.model_validate({**raw, "target": "editor"}).call_target()


def test_body_data_reads_a2a_messages() -> None:
    """Data and text parts come out as values; a body without a message is an error."""
    assert body_data(call_body({"a": 1}, "m")) == {"a": 1}
    assert body_data({"message": {"parts": [{"text": "hi"}]}}) == "hi"
    with pytest.raises(ValueError):
        body_data({})


def test_credential_checks() -> None:
    """A credential verifies against its hub, and not against another hub or after expiry."""
    hub, other = HubKey.generate(), HubKey.generate()
    private, _ = new_agent_key()
    cred = hub.issue("drafter", private.public_key(), days=1, now=1000.0)
    assert cred.problem(hub.public, hub.id, 1001.0) is None
    assert "not by this hub" in (cred.problem(other.public, other.id, 1001.0) or "")
    assert "expired" in (cred.problem(hub.public, hub.id, 1000.0 + 2 * 86400) or "")
    forged = cred.model_copy(update={"agent": "admin"})
    assert "does not verify" in (forged.problem(hub.public, hub.id, 1001.0) or "")


def test_every_error_the_library_raises_on_purpose_is_an_interlink_error() -> None:
    """One tree (errors.py): `except InterlinkError` catches what Interlink raises, and the
    errors that were plain ValueErrors stay ValueErrors for code that caught them so."""
    import interlink
    from interlink.delegation import DelegationError
    from interlink.edges.bearer import NotAuthenticated
    from interlink.errors import InterlinkError
    from interlink.labels import LabelError
    from interlink.sdk import StaleRevision
    for error in (DelegationError, LabelError, NotAuthenticated, StaleRevision,
                  interlink.UsageError):
        assert issubclass(error, InterlinkError), error
    assert issubclass(LabelError, ValueError) and issubclass(DelegationError, ValueError)
    assert issubclass(interlink.UsageError, RuntimeError)
    import pytest
    with pytest.raises(interlink.UsageError, match="async with"):
        _ = interlink.connect("nobody", credential="/nonexistent").connection


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_nothing_holding_nan_or_infinity_is_signed(number: float) -> None:
    """Not JSON, so the hub would refuse it; the wire codec would even write it as null, and
    the signature would then fail at the hub for a reason the sender cannot see."""
    private = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError):
        seal({"id": "x1", "kind": "call", "sender": "a", "target": "b.c", "conversation": "x1",
              "traceparent": new_traceparent(), "body": call_body({"n": number}, "m1")},
             private)
