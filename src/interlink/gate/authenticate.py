"""authenticate: who sent this, provably, and is it fresh?

* a `hello` carries the credential: it must be signed by this hub's key, issued by this hub,
  unexpired, name the sender, and echo the connection's challenge;
* every envelope is signed by the key its credential names;
* its timestamp is within the clock-skew window and not older than this hub's start, and its
  nonce has not been seen in that window (replays are refused).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from ..envelope import check_signature
from ..errors import GateDenied
from ..identity import Credential, HubKey
from .context import GateContext
from .stage import deny


class Nonces(Protocol):
    """Whether a nonce was already used within the freshness window (and, if not, it is now)."""

    async def seen(self, nonce: str, now: float) -> bool: ...


class NonceCache:
    """Nonces seen within the freshness window, oldest first: the whole answer for a hub alone
    on its store; in front of the store's nonce log (`services.nonces`) where hubs share one."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def seen(self, nonce: str, now: float) -> bool:
        return self.seen_here(nonce, now)

    def seen_here(self, nonce: str, now: float) -> bool:
        horizon = now - 2 * self.window
        while self._seen:
            _, at = next(iter(self._seen.items()))
            if at >= horizon:
                break
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return True
        self._seen[nonce] = now
        return False

    def __len__(self) -> int:
        return len(self._seen)


class Authenticate:
    name = "authenticate"

    def __init__(self, hub: HubKey, *, skew: float, started: float,
                 clock: Callable[[], float] = time.time, policy: Any = None,
                 nonces: Nonces | None = None) -> None:
        self.hub = hub
        self.policy = policy
        """The policy file, for revoked credentials (`revoked:` in mesh.yaml)."""
        self.skew = skew
        self.started = started
        self.clock = clock
        self.nonces: Nonces = nonces if nonces is not None else NonceCache(skew)

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env, wire, session = ctx.env, ctx.wire, ctx.session
        assert env is not None and wire is not None
        now = self.clock()
        if env.kind == "hello":
            try:
                credential = Credential.model_validate(env.body.get("credential"))
            except ValidationError:
                return deny(self.name, "bad_credential",
                            "the hello carries no well-formed credential")
        elif session.credential is None:
            return deny(self.name, "not_authenticated",
                        "this connection has not said hello: send a signed hello first")
        else:
            credential = session.credential
        # The hello's credential was checked whole (issuer, signature) when the connection
        # said hello; the same object is only re-checked for expiry on later envelopes.
        problem = (credential.problem(self.hub.public, self.hub.id, now)
                   if env.kind == "hello" else credential.expiry_problem(now))
        if problem:
            code = ("foreign_credential" if credential.hub != self.hub.id else
                    "expired_credential" if now >= credential.expires else "bad_credential")
            return deny(self.name, code, problem)
        if self.policy is not None and self.policy.current().is_revoked(credential.id):
            return deny(self.name, "revoked_credential",
                        f"{credential.agent}'s credential {credential.id} was revoked; the "
                        f"agent needs a new one (`interlink agent add {credential.agent} "
                        "--renew`)", "revoked")
        if credential.agent != env.sender:
            return deny(self.name, "sender_mismatch",
                        f"the envelope says it is from {env.sender!r} but the connection "
                        f"authenticated as {credential.agent!r}")
        if not check_signature(wire, credential.key()):
            return deny(self.name, "bad_signature",
                        f"the envelope's signature does not verify with {credential.agent}'s key "
                        "(forged, or altered after signing)")
        if env.kind == "hello" and env.body.get("challenge") != session.challenge:
            return deny(self.name, "bad_challenge",
                        "the hello does not answer this connection's challenge (replayed hello?)")
        if abs(now - env.ts) > self.skew:
            return deny(self.name, "stale",
                        f"the envelope was signed at {env.ts:.3f}, {now - env.ts:+.1f}s from the "
                        f"hub's clock; the window is ±{self.skew:.0f}s. Check the clock, re-sign")
        if env.ts < self.started:
            return deny(self.name, "stale",
                        "the envelope was signed before this hub started; re-sign and resend")
        if await self.nonces.seen(env.nonce, now):
            return deny(self.name, "replay",
                        f"nonce {env.nonce} was already used: this envelope is a replay")
        ctx.credential = credential
        return None
