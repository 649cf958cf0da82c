"""decode: bound the size, parse JSON, check the envelope's shape."""

from __future__ import annotations

import re

from pydantic import ValidationError

from .. import strictjson
from ..envelope import ENVELOPE_ID, Envelope
from ..errors import GateDenied
from .context import GateContext
from .stage import deny


class Decode:
    name = "decode"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        size = len(ctx.raw)
        if size > self.max_bytes:
            ctx.wire = _id_only(ctx.raw)
            return deny(self.name, "too_large",
                        f"the envelope is {size} bytes; this hub accepts at most {self.max_bytes}. "
                        "Send large content by reference, or raise hub.max_envelope_bytes")
        try:
            wire = strictjson.loads(ctx.raw)
        except strictjson.BadJSON as exc:
            ctx.wire = _id_only(ctx.raw)
            return deny(self.name, "malformed", f"the frame is not acceptable JSON: {exc}")
        if not isinstance(wire, dict):
            return deny(self.name, "malformed", "an envelope must be a JSON object")
        ctx.wire = wire
        try:
            ctx.env = Envelope.model_validate(wire)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'envelope'}: {err['msg']}"
                for err in exc.errors()[:5])
            return deny(self.name, "malformed", f"the envelope is not well-formed: {problems}")
        return None


_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,128})"')


def _id_only(raw: bytes) -> dict[str, str] | None:
    """The envelope id of a frame that cannot be decoded, when one can be read off it: the
    refusal then names it, so the sender fails that request at once instead of waiting."""
    match = _ID.search(raw[:4096]) or _ID.search(raw[-4096:])
    if match is None:
        return None
    try:
        found = match.group(1).decode()
    except UnicodeDecodeError:
        return None
    return {"id": found} if ENVELOPE_ID.fullmatch(found) else None
