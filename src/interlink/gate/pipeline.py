"""The gate: the ordered stages every envelope passes, built and checked once.

    decode → authenticate → authorize → commit → deliver → observe

Order is the list order. `decode` must be first and `observe` last; `observe` runs for every
outcome. Only the pipeline turns a denial (or an unexpected error inside a stage) into the
sender's structured error; stages only return verdicts. Later issues add label, guard and
validate as stages between authorize and commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from .. import frames
from ..errors import GateDenied, StoreUnavailable
from ..frames import Frame
from .context import OUTGOING, GateContext, Outgoing, Session
from .stage import Stage

log = logging.getLogger("interlink.gate")


class Pipeline:
    def __init__(self, stages: Sequence[Stage],
                 after: Sequence[Callable[[GateContext], Awaitable[None]]] = ()) -> None:
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"gate stages must have unique names, got {names}")
        if not names or names[0] != "decode" or names[-1] != "observe":
            raise ValueError(f"the gate must start with decode and end with observe, got {names}")
        self._stages = tuple(stages[:-1])
        self._observe = stages[-1]
        self.names = tuple(names)
        self._after = tuple(after)

    async def run(self, raw: bytes, session: Session) -> GateContext:
        """Take one frame through every stage; answer the sender; return what happened."""
        ctx = GateContext(raw=raw, session=session, received=time.time())
        outgoing = Outgoing()
        token = OUTGOING.set(outgoing)
        try:
            await self._through(ctx)
        finally:
            OUTGOING.reset(token)
            outgoing.open = False
        for to, frame in outgoing.frames:  # what the run sends others, then the verdict
            try:
                await to.send(frame)
            except Exception as exc:  # that session went away; what was committed stays
                log.debug("could not send to session %s: %r", to.id, exc)
        await self._answer(ctx)
        for hook in self._after:  # what a decision sets off: quarantine, failing a call
            try:
                await hook(ctx)
            except Exception:
                log.exception("after-gate hook failed")
        return ctx

    async def _through(self, ctx: GateContext) -> None:
        """The stages in order, stopping at the first denial; then observe."""
        for stage in self._stages:
            try:
                denial = await stage(ctx)
            except StoreUnavailable as exc:  # not a bug: the store's server is away
                log.warning("refused an envelope at %s: %s", stage.name, exc)
                denial = GateDenied(stage.name, "store_unavailable",
                                    f"the hub cannot reach its store ({exc}); nothing was "
                                    "accepted: retry once it is back (the hub reconnects by "
                                    "itself)", detail={"retriable": True})
            except Exception as exc:  # a stage's bug must not take the hub down
                log.exception("gate stage %s failed", stage.name)
                denial = GateDenied(stage.name, "internal",
                                    f"the hub failed while handling this envelope ({exc!r}); "
                                    "it was not accepted: retry, and report it if it persists")
            if denial is not None:
                ctx.denial = denial
                ctx.failed_stage = stage.name
                break
            ctx.passed.append(stage.name)
        try:
            await self._observe(ctx)
        except Exception:
            log.exception("audit failed for envelope %s", ctx.env.id if ctx.env else "?")

    async def _answer(self, ctx: GateContext) -> None:
        env = ctx.env
        frame: Frame
        if ctx.denial is not None:
            wire_id = (ctx.wire or {}).get("id")
            frame = frames.refused(env.id if env else (
                wire_id if isinstance(wire_id, str) else None), env.kind if env else None,
                ctx.denial.to_dict())
        else:
            assert env is not None
            frame = frames.accepted(env.id, env.kind, ctx.answer)
        try:
            await ctx.session.send(frame)
        except Exception as exc:  # the sender went away; what was committed stays committed
            log.debug("could not answer session %s: %r", ctx.session.id, exc)

