"""Bearer token → the agent an outside client acts as: the one check the A2A and ACP edges
share (a hub-signed token, not revoked, whose agent is still enrolled)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..identity import check_token

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
    try:
        agent = check_token(token.strip(), hub.key.public, hub.key.id, revoked=policy)
    except ConfigError as exc:
        raise NotAuthenticated(str(exc)) from None
    if not policy.enrolled(agent):
        raise NotAuthenticated(f"the token's agent {agent!r} is no longer enrolled on this mesh")
    return agent
