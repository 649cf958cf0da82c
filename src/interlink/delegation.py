"""Delegation: an agent lets another act for it, with no more than it could do itself.

A delegation is a Biscuit token (biscuit-python) whose root key is the hub's:

* the delegator D asks the hub (a `delegate` envelope, authorized against D's own grants) and
  gets a token whose authority block says `delegator(D)`, `delegate(B)`, one `right(agent,
  skill)` per granted call, an expiry check and `check if holder(B)` — the gate authenticated
  every envelope's sender, so the token is useless to anyone but B who steals it;
* B may attenuate it offline (append blocks with more checks) before using it; facts in
  appended blocks grant nothing, so nobody can widen it;
* B may pass some of it on to C: B asks the hub (a `delegate` envelope carrying B's token);
  the hub checks each right against B's token (so never wider than what B was given), and
  issues C a token that keeps the original delegator, records B in the chain (`via`), and
  expires no later than B's;
* B's call carries the token (`body.delegation`); the gate's authorize stage verifies it with the
  hub's public key and authorizes the operation with ambient facts (operation, holder, time);
  the effective right is the intersection of the token's rights, every check along the chain,
  and D's grants in mesh.yaml *now* (a right D has lost is lost for its delegates too). The audit
  record names the chain and the token's revocation ids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import biscuit_auth as biscuit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import InterlinkError
from .identity import public_raw

MAX_TTL = 7 * 86400.0


class DelegationError(InterlinkError, ValueError):
    """A delegation token that does not allow what it is used for (the reason says why)."""


@dataclass(frozen=True)
class Delegated:
    delegator: str
    delegate: str
    revocation_ids: list[str]
    via: tuple[str, ...] = ()
    expires: int = 0

    @property
    def chain(self) -> list[str]:
        return [self.delegator, *self.via, self.delegate]


def _q(text: str) -> str:
    """A Datalog string literal (agent and skill names are already restricted to safe
    characters; this keeps anything else out)."""
    return json.dumps(str(text))


def mint(hub_private: Ed25519PrivateKey, delegator: str, delegate: str,
         rights: list[tuple[str, str]], ttl: float, *, via: tuple[str, ...] = (),
         not_after: int | None = None) -> str:
    """A token letting the agent `delegate` make `rights` calls for `delegator` (passed on
    through the agents in `via`, expiring no later than `not_after`)."""
    raw = hub_private.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    root = biscuit.PrivateKey.from_bytes(  # the stubs lag the library: it takes the algorithm
        raw, biscuit.Algorithm.Ed25519)  # type: ignore[call-arg, attr-defined]
    expires = int(time.time() + min(ttl, MAX_TTL))
    if not_after is not None:
        expires = min(expires, not_after)
    code = [f"delegator({_q(delegator)});", f"delegate({_q(delegate)});",
            f"expires({expires});"]
    code += [f"via({n}, {_q(agent)});" for n, agent in enumerate(via)]
    code += [f"right({_q(agent)}, {_q(skill)});" for agent, skill in rights]
    code += [f"check if time($t), $t <= {expires};",
             f"check if holder({_q(delegate)});"]
    return str(biscuit.BiscuitBuilder("\n".join(code)).build(root).to_base64())


def attenuate(token: str, hub_public: Ed25519PublicKey, *, only: list[tuple[str, str]]
              ) -> str:
    """Narrow a token offline to the calls in `only` (anyone holding it can do this)."""
    parsed = biscuit.Biscuit.from_base64(token, _root(hub_public))
    allowed = " or ".join(f"operation({_q(a)}, {_q(s)})" for a, s in only) or "false"
    return str(parsed.append(biscuit.BlockBuilder(f"check if {allowed};")).to_base64())


def check(token: str, hub_public: Ed25519PublicKey, *, holder: str,
          agent: str, skill: str) -> Delegated:
    """Verify `token` and authorize the call `agent.skill` by the authenticated agent
    `holder`."""
    try:
        parsed = biscuit.Biscuit.from_base64(token, _root(hub_public))
    except Exception as exc:
        raise DelegationError(f"the delegation token does not verify with this hub's key "
                              f"({type(exc).__name__}: forged, altered or from another hub)"
                              ) from exc
    ambient = (f"operation({_q(agent)}, {_q(skill)});\n"
               f"holder({_q(holder)});\n"
               f"time({int(time.time())});\n"
               "allow if operation($a, $s), right($a, $s);")
    authorizer = biscuit.AuthorizerBuilder(ambient).build(parsed)
    try:
        authorizer.authorize()
    except Exception as exc:
        raise DelegationError(
            f"the delegation does not allow {agent}.{skill} for this caller: it names other "
            "rights, another holder, or has expired, or a check added along the chain refuses "
            "it") from exc
    facts = authorizer.query(biscuit.Rule(
        "found($d, $b, $e) <- delegator($d), delegate($b), expires($e)"))
    delegator, delegate, expires = (facts[0].terms if facts else ("?", "?", 0))
    hops = sorted((int(f.terms[0]), str(f.terms[1])) for f in authorizer.query(
        biscuit.Rule("hop($n, $a) <- via($n, $a)")))
    return Delegated(str(delegator), str(delegate), [str(r) for r in parsed.revocation_ids],
                     tuple(agent for _, agent in hops), int(expires))


def _root(hub_public: Ed25519PublicKey) -> biscuit.PublicKey:
    return biscuit.PublicKey.from_bytes(  # the stubs lag the library: it takes the algorithm
        public_raw(hub_public), biscuit.Algorithm.Ed25519)  # type: ignore[call-arg, attr-defined]


def revocation_ids(token: str, hub_public: Ed25519PublicKey) -> list[str]:
    """A delegation token's revocation ids, one per block (it must verify with the hub key)."""
    parsed = biscuit.Biscuit.from_base64(token, _root(hub_public))
    return [str(r) for r in parsed.revocation_ids]
