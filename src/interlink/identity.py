"""Who is who: the hub key, agent key pairs, hub-signed credentials, and signatures.

* The **hub key** (Ed25519) is made by `interlink init`; its public half identifies the mesh.
* Each agent has its own key pair and a **credential**: the hub's signature over
  (agent id, agent public key, hub id, issued, expires). Anyone holding the hub's public key can
  check a credential without asking the hub.
* Agents sign every envelope with their own key; the signed bytes are the envelope's canonical
  JSON form (sorted keys, no whitespace, UTF-8) without its `sig` field.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from . import codec
from .errors import ConfigError

DEFAULT_CREDENTIAL_DAYS = 365


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(obj: Any) -> bytes:
    """The one byte form that is signed and hashed: sorted keys, no whitespace, UTF-8, numbers
    as Python writes them. Raises ValueError for NaN and Infinity, which are not JSON: nothing
    holding them can be sent (the hub would refuse it), so it is refused before it is signed.

    Written by orjson, several times faster, wherever that gives the same bytes: everywhere
    but floats Python writes in exponent form, NaN and Infinity (orjson writes null), and
    integers beyond 64 bits (orjson declines them) — Python's encoder writes those."""
    if not codec.any_float(obj, _written_otherwise):
        try:
            return orjson.dumps(obj, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _written_otherwise(number: float) -> bool:
    """A float orjson writes otherwise than Python: Python writes exponent form from 1e16 up
    and below 1e-4 (orjson writes `1e16` for `1e+16`, `0.00001` for `1e-05`), and NaN and
    Infinity are not JSON. In between both write the same shortest digits (held to it over
    millions of floats, every decade's edges included, in the tests)."""
    return not (1e-4 <= abs(number) < 1e16 or number == 0.0)


_ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS)
"""Sorted keys; dates, dataclasses and subclasses of str, int, dict and list declined, so
Python's encoder decides what becomes of them, as it always did (UUIDs and enums, which it
refused, orjson writes as their values)."""


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@functools.lru_cache(maxsize=4096)
def load_public(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(b64d(text))


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key."""
    return hashlib.sha256(public_raw(public)).hexdigest()[:16]


def sign(private: Ed25519PrivateKey, data: bytes) -> str:
    return b64e(private.sign(data))


def verify(public: Ed25519PublicKey, data: bytes, signature: str) -> bool:
    try:
        public.verify(b64d(signature), data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


class HubKey:
    """The mesh's signing key. Its public half is what every credential is checked against."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.public_b64 = b64e(public_raw(self.public))
        self.id = "hub-" + key_id(self.public)

    @classmethod
    def generate(cls) -> HubKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> HubKey:
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise ConfigError(f"no hub key at {path}: run `interlink init` first") from exc
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM Ed25519 private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a key that is not Ed25519")
        return cls(private)

    def save(self, path: Path) -> None:
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem.decode())

    def sign(self, data: bytes) -> str:
        return sign(self.private, data)

    def issue(self, agent: str, agent_public: Ed25519PublicKey, *,
              days: float = DEFAULT_CREDENTIAL_DAYS, now: float | None = None) -> Credential:
        issued = time.time() if now is None else now
        body = {
            "agent": agent,
            "public_key": b64e(public_raw(agent_public)),
            "hub": self.id,
            "issued": round(issued, 3),
            "expires": round(issued + days * 86400, 3),
        }
        return Credential.model_validate({**body, "signature": self.sign(canonical(body))})


TOKEN_AUDIENCE = "interlink-edge"
ADMIN_AUDIENCE = "interlink-admin"
"""Tokens for the hub's operator endpoints (`/admin/...`), minted by whoever holds the hub key
(the CLI, in the mesh home) and short-lived."""


def issue_token(hub: HubKey, agent: str, *, days: float = 30.0,
                now: float | None = None, audience: str = TOKEN_AUDIENCE) -> str:
    """A bearer token (a JWT signed by the hub's Ed25519 key) that lets an outside client act
    as the enrolled agent `agent` at the hub's protocol edges (A2A, ACP) until it expires."""
    issued = time.time() if now is None else now
    claims = {"sub": agent, "iss": hub.id, "aud": audience, "iat": int(issued),
              "exp": int(issued + days * 86400), "jti": "tok-" + secrets.token_hex(8)}
    return jwt.encode(claims, hub.private, algorithm="EdDSA", headers={"kid": hub.id})


def token_id(token: str) -> str | None:
    """A bearer token's id (its `jti`), read without verifying it (for revoking it)."""
    try:
        jti = jwt.decode(token, options={"verify_signature": False}).get("jti")
    except jwt.PyJWTError:
        return None
    return str(jti) if jti else None


def check_token(token: str, hub_public: Ed25519PublicKey, hub_id: str, *,
                audience: str = TOKEN_AUDIENCE, revoked: Any = None) -> str:
    """The agent a bearer token speaks for; ConfigError saying why when it does not verify or
    was revoked (`revoked`: a policy, asked `is_revoked(jti)`)."""
    claims = token_claims(token, hub_public, hub_id, audience=audience)
    if revoked is not None and claims.get("jti") and revoked.is_revoked(str(claims["jti"])):
        raise ConfigError(f"the bearer token {claims['jti']} was revoked; ask for a new one "
                          "(`interlink token AGENT`)")
    return str(claims["sub"])


def token_claims(token: str, hub_public: Ed25519PublicKey, hub_id: str, *,
                 audience: str = TOKEN_AUDIENCE) -> dict[str, Any]:
    """A bearer token's claims once its signature, issuer, audience and expiry check out
    (revocation is the caller's: it changes while a token stays the same); ConfigError saying
    why not."""
    try:
        claims = jwt.decode(token, hub_public, algorithms=["EdDSA"], audience=audience,
                            issuer=hub_id, options={"require": ["sub", "exp", "iss", "aud"]})
    except jwt.ExpiredSignatureError as exc:
        raise ConfigError("the bearer token has expired; issue a new one with "
                          "`interlink token AGENT`") from exc
    except jwt.InvalidIssuerError as exc:
        raise ConfigError("the bearer token was issued by another hub") from exc
    except jwt.PyJWTError as exc:
        raise ConfigError(f"the bearer token is not valid here ({exc})") from exc
    return dict(claims)


class Credential(BaseModel):
    """The hub's signed statement: this public key speaks for this agent until `expires`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    public_key: str

    @property
    def id(self) -> str:
        """`cred-` and the start of the SHA-256 of the public key: what `interlink revoke`
        names (a renewed credential has a new key, so a new id)."""
        return _credential_id(self.public_key)
    hub: str
    issued: float
    expires: float
    signature: str

    def signed_part(self) -> bytes:
        return canonical(self.model_dump(exclude={"signature"}))

    def problem(self, hub_public: Ed25519PublicKey, hub_id: str, now: float) -> str | None:
        """Why this credential is not acceptable to the hub `hub_id`, or None if it is."""
        if self.hub != hub_id:
            return f"the credential was issued by {self.hub}, not by this hub ({hub_id})"
        if not _hub_signed(hub_public, self):
            return "the credential's hub signature does not verify (forged or altered)"
        return self.expiry_problem(now)

    def expiry_problem(self, now: float) -> str | None:
        """Why this credential is no longer valid at `now` (it expired), or None."""
        if now >= self.expires:
            return (f"the credential of {self.agent!r} expired at "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.expires))}; "
                    f"re-enrol with `interlink agent add {self.agent} --renew`")
        return None

    def key(self) -> Ed25519PublicKey:
        return load_public(self.public_key)


@functools.lru_cache(maxsize=4096)
def _credential_id(public_key: str) -> str:
    return "cred-" + hashlib.sha256(public_key.encode()).hexdigest()[:24]


_VERIFIED: dict[tuple[bytes, bytes, str], bool] = {}
_VERIFIED_MAX = 4096


def _hub_signed(hub_public: Ed25519PublicKey, credential: Credential) -> bool:
    """Check the hub's signature on a credential, remembering credentials already checked (a
    connection presents the same credential for every envelope)."""
    key = (public_raw(hub_public), credential.signed_part(), credential.signature)
    known = _VERIFIED.get(key)
    if known is None:
        known = verify(hub_public, key[1], credential.signature)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = known
    return known


class CredentialFile(BaseModel):
    """What `interlink agent add` writes for an agent: its credential, its private key, and
    how to reach and recognise its hub. Kept owner-readable only."""

    model_config = ConfigDict(extra="forbid")

    credential: Credential
    private_key: str
    hub_url: str
    hub_public_key: str

    @classmethod
    def load(cls, path: str | Path) -> CredentialFile:
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no credential file at {path}: enrol the agent with `interlink agent add NAME`"
            ) from exc
        except ValidationError as exc:
            raise ConfigError(f"{path} is not an Interlink credential file: {exc}") from exc

    def save(self, path: Path) -> None:
        write_private(path, self.model_dump_json(indent=2) + "\n")

    def private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(b64d(self.private_key))

    def hub_key(self) -> Ed25519PublicKey:
        return load_public(self.hub_public_key)


def new_agent_key() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return private, b64e(raw)
