"""Bearer token → the agent an outside client acts as: the one check the A2A and ACP edges
share (a hub-signed token, not revoked, whose agent is still enrolled)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..identity import token_claims

if TYPE_CHECKING:
    from ..hub import Hub


class NotAuthenticated(ConfigError):
    """The request carries no usable bearer token; the message says why and what to do."""


def acting_agent(hub: Hub, authorization: str) -> str:
    """The enrolled agent an `Authorization: Bearer <token>` header speaks for; raises
    NotAuthenticated naming what is wrong (missing, expired, foreign, revoked, unenrolled)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("this endpoint needs a bearer token")
    policy = hub.policy.current()
    agent, jti = _verified(hub, token.strip())
    if jti and policy.is_revoked(jti):
        raise NotAuthenticated(f"the bearer token {jti} was revoked; ask for a new one "
                               "(`interlink token AGENT`)")
    if not policy.enrolled(agent):
        raise NotAuthenticated(f"the token's agent {agent!r} is no longer enrolled on this mesh")
    return agent


VERIFIED_TOKENS = 4096
"""How many verified tokens the edges remember (least recently used first out)."""
_VERIFIED: OrderedDict[tuple[str, str], tuple[str, float, str]] = OrderedDict()


def _verified(hub: Hub, token: str) -> tuple[str, str]:
    """(agent, token id) of a token whose signature, issuer, audience and expiry check out.
    Its signature is checked once: a client sends the same token with every request, and
    checking it again costs an Ed25519 verification each time. What can change while the
    token stays the same (expiry passing, a revocation, the agent's removal) is checked on
    every request, here and in `acting_agent`."""
    key = (hub.key.id, token)
    known = _VERIFIED.get(key)
    if known is not None and time.time() < known[1]:
        _VERIFIED.move_to_end(key)
        return known[0], known[2]
    try:
        claims = token_claims(token, hub.key.public, hub.key.id)
    except ConfigError as exc:
        _VERIFIED.pop(key, None)
        raise NotAuthenticated(str(exc)) from None
    agent, jti = str(claims["sub"]), str(claims.get("jti") or "")
    _VERIFIED[key] = (agent, float(claims["exp"]), jti)
    while len(_VERIFIED) > VERIFIED_TOKENS:
        _VERIFIED.popitem(last=False)
    return agent, jti
