"""The pipeline holds the frames a gate run sends to others until the run has written all it
writes (one commit covers them), then sends them before the sender's verdict."""

from __future__ import annotations

import asyncio
from typing import Any

from interlink import frames
from interlink.envelope import Envelope, new_traceparent
from interlink.errors import GateDenied
from interlink.gate import GateContext, Pipeline, Session
from interlink.gate.context import send_after_run


def session(name: str, sent: list[tuple[str, Any]]) -> Session:
    async def send(frame: Any) -> None:
        sent.append((name, frame.get("op")))
    return Session(id=name, remote="test", challenge="c", send=send)


class Step:
    def __init__(self, name: str, run: Any) -> None:
        self.name, self._run = name, run

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        await self._run(ctx)
        return None


async def test_frames_for_others_leave_after_the_whole_run_and_before_the_verdict() -> None:
    sent: list[tuple[str, Any]] = []
    callee = session("callee", sent)
    later: list[asyncio.Task[None]] = []

    async def deliver(ctx: GateContext) -> None:
        await send_after_run(callee, frames.failed("c1", {"code": "x"}))
        sent.append(("deliver stage", "done"))
        # a task started during the run, sending once the run is over: sent at once, not held
        later.append(asyncio.ensure_future(asyncio.sleep(0)))

    async def observe(ctx: GateContext) -> None:
        sent.append(("observe stage", "done"))

    async def no_op(ctx: GateContext) -> None:
        return None

    async def decode(ctx: GateContext) -> None:
        ctx.env = Envelope(id="e1", kind="call", sender="sender", target="callee.work",
                           conversation="e1", traceparent=new_traceparent(), ts=0.0,
                           nonce="n" * 16)

    pipeline = Pipeline([Step("decode", decode), Step("deliver", deliver),
                         Step("observe", observe)])
    sender = session("sender", sent)
    ctx = await pipeline.run(b"{}", sender)
    assert ctx.denial is None
    assert [who for who, _ in sent] == ["deliver stage", "observe stage", "callee", "sender"]

    after: list[tuple[str, Any]] = []
    late = session("late", after)

    async def send_later() -> None:
        await asyncio.sleep(0.01)
        await send_after_run(late, frames.failed("c2", {"code": "x"}))

    # a task that inherited a finished run's context sends at once
    async def deliver_later(ctx: GateContext) -> None:
        later.append(asyncio.ensure_future(send_later()))

    await Pipeline([Step("decode", decode), Step("deliver", deliver_later),
                    Step("observe", no_op)]).run(b"{}", sender)
    await asyncio.gather(*later)
    assert after == [("late", "failed")]
