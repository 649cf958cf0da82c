"""commit and deliver: hand the envelope to the service that owns its kind.

commit makes the envelope durable (the sender is answered only after it); deliver moves it
on to its recipient. Services decide nothing about security: that was settled above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..errors import GateDenied
from .context import GateContext
from .stage import deny


class Service(Protocol):
    async def commit(self, ctx: GateContext) -> GateDenied | None: ...

    async def deliver(self, ctx: GateContext) -> None: ...


class Commit:
    name = "commit"

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = services

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        assert ctx.env is not None
        service = self.services.get(ctx.env.kind)
        if service is None:
            return deny(self.name, "unknown_kind", f"no service handles {ctx.env.kind!r}")
        return await service.commit(ctx)


class Deliver:
    name = "deliver"

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = services

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        assert ctx.env is not None
        await self.services[ctx.env.kind].deliver(ctx)
        return None
