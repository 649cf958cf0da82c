"""decode: bound the size, parse JSON, check the envelope's shape."""

from __future__ import annotations

import json

from pydantic import ValidationError

from ..envelope import Envelope
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
            return deny(self.name, "too_large",
                        f"the envelope is {size} bytes; this hub accepts at most {self.max_bytes}. "
                        "Send large content by reference, or raise hub.max_envelope_bytes")
        constants: list[str] = []
        try:
            wire = json.loads(ctx.raw, parse_constant=lambda c: constants.append(c))
        except (ValueError, UnicodeDecodeError) as exc:
            return deny(self.name, "malformed", f"the frame is not valid JSON ({exc})")
        if not isinstance(wire, dict):
            return deny(self.name, "malformed", "an envelope must be a JSON object")
        ctx.wire = wire
        if constants:  # NaN and Infinity are not JSON, and poison whatever stores them
            return deny(self.name, "malformed",
                        f"the envelope holds {', '.join(sorted(set(constants)))}, which is not "
                        "JSON; send finite numbers")
        try:
            ctx.env = Envelope.model_validate(wire)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'envelope'}: {err['msg']}"
                for err in exc.errors()[:5])
            return deny(self.name, "malformed", f"the envelope is not well-formed: {problems}")
        return None
