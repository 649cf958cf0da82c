"""Bearer tokens at the A2A and ACP edges: a token's signature is verified once, and what can
change while the token stays the same (expiry, revocation, the agent's removal) is checked on
every request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from interlink.edges import bearer
from interlink.edges.bearer import NotAuthenticated, acting_agent
from interlink.home import MeshHome
from interlink.hub import Hub
from interlink.identity import issue_token, token_id

from ..helpers import applied, make_home


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, Hub]]:
    home = make_home(tmp_path / "home", {"alice": [], "bob": []})
    async with Hub(home) as running:
        yield home, running


class Running:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = bearer.token_claims

    def count(token: str, *args: object, **kwargs: object) -> dict[str, object]:
        seen.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bearer, "token_claims", count)
    return seen


async def test_a_token_is_verified_once_and_still_checked_for_revocation(
        hub: tuple[MeshHome, Hub], monkeypatch: pytest.MonkeyPatch) -> None:
    home, running = hub
    verified = counting(monkeypatch)
    token = issue_token(running.key, "alice")
    for _ in range(5):
        assert acting_agent(running, f"Bearer {token}") == "alice"
    assert len(verified) == 1
    jti = token_id(token)
    assert jti is not None
    home.revoke([jti])
    await applied(Running(running))
    with pytest.raises(NotAuthenticated, match="revoked"):
        acting_agent(running, f"Bearer {token}")


async def test_a_remembered_token_still_expires(hub: tuple[MeshHome, Hub]) -> None:
    _, running = hub
    token = issue_token(running.key, "alice", days=2 / 86400)  # two seconds
    assert acting_agent(running, f"Bearer {token}") == "alice"
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    while time.time() < expires + 0.05:
        time.sleep(0.05)
    with pytest.raises(NotAuthenticated, match="expired"):
        acting_agent(running, f"Bearer {token}")


async def test_a_remembered_token_of_a_removed_agent_is_refused(
        hub: tuple[MeshHome, Hub]) -> None:
    home, running = hub
    token = issue_token(running.key, "bob")
    assert acting_agent(running, f"Bearer {token}") == "bob"
    home.remove_agent("bob")
    await applied(Running(running))
    with pytest.raises(NotAuthenticated, match="no longer enrolled"):
        acting_agent(running, f"Bearer {token}")


async def test_a_forged_token_is_never_taken_for_a_remembered_one(
        hub: tuple[MeshHome, Hub]) -> None:
    _, running = hub
    token = issue_token(running.key, "alice")
    assert acting_agent(running, f"Bearer {token}") == "alice"
    header, claims, signature = token.split(".")
    forged_claims = jwt.utils.base64url_encode(jwt.utils.base64url_decode(claims).replace(
        b'"alice"', b'"bob"')).decode()
    for forged in (f"{header}.{forged_claims}.{signature}", f"{header}.{claims}.{signature}A",
                   f"{header}.{claims}." + "A" * len(signature)):
        with pytest.raises(NotAuthenticated, match="not valid"):
            acting_agent(running, f"Bearer {forged}")
    # another hub's token with the same claims
    other = make_home(Path(str(running.home.root) + "-other"), {"alice": []})
    with pytest.raises(NotAuthenticated, match=r"another hub|not valid"):
        acting_agent(running, f"Bearer {issue_token(other.hub_key(), 'alice')}")


def test_the_memory_of_tokens_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bearer.VERIFIED_TOKENS >= 1
    monkeypatch.setattr(bearer, "VERIFIED_TOKENS", 3)
    monkeypatch.setattr(bearer, "_VERIFIED", bearer.OrderedDict())

    class Key:
        id = "hub-x"
        public = None

    class FakeHub:
        key = Key()

    monkeypatch.setattr(bearer, "token_claims",
                        lambda token, *a, **k: {"sub": "alice", "exp": time.time() + 60,
                                                "jti": token})
    for n in range(10):
        bearer._verified(FakeHub(), f"t{n}")  # type: ignore[arg-type]
    assert list(k[1] for k in bearer._VERIFIED) == ["t7", "t8", "t9"]
