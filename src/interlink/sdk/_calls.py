"""Calls over the wire: making them (and waiting for the reply, with progress), answering the
ones delivered to this agent, and the call-related requests (approve, delegate, relabel).
Retries keep the call's id, so the hub attaches a retry to the original call and never runs it
twice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..envelope import body_data, call_body, child_traceparent, new_id
from ..errors import CallError, CallTimeout, GateDenied, InputRequired, InterlinkError, SkillFailed
from ._tracing import outgoing
from ._wire import Wire, log

RESULT_GRACE = 5.0
"""How long after the hub's deadline a caller waits for the hub's own verdict."""

ProgressHandler = Callable[[dict[str, Any]], Any]


@dataclass(eq=False)
class _PendingCall:
    fields: dict[str, Any]
    result: asyncio.Future[Any]
    deadline: float
    timeout: float
    on_progress: ProgressHandler | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)
    """The reply's effective label, as the hub computed it."""


@dataclass(frozen=True)
class Reply:
    """A call's answer with what it carries: `value` (what `call` returns), `labels` (its
    effective label as the hub computed it: level, tags, integrity, provenance) and the call's
    id. What `call_with_labels` returns."""

    value: Any
    labels: dict[str, Any]
    call_id: str


class Calls(Wire):
    """The calls this connection made and is serving."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._calls: dict[str, _PendingCall] = {}

    @property
    def pending_calls(self) -> int:
        """Calls made on this connection that have not ended yet."""
        return len(self._calls)

    async def call(self, agent: str, skill: str, data: Any = None, *, timeout: float = 30.0,
                   call_id: str | None = None, conversation: str | None = None,
                   parent: str | None = None, hops: int = 0, traceparent: str | None = None,
                   on_progress: ProgressHandler | None = None,
                   on_accepted: Callable[[dict[str, Any]], Any] | None = None,
                   message: dict[str, Any] | None = None,
                   delegation: str | None = None) -> Any:
        """Call `agent.skill` with `data` and return its output (`call_with_labels` also gives
        the reply's label).

        Raises GateDenied if the hub refused the call (with the rule), CallTimeout if no answer
        came in time, SkillFailed if the skill raised. Retrying with the same `call_id` never
        runs the skill twice: it returns the first call's outcome. `on_accepted` hears the
        hub's acceptance; `message` sends a whole A2A message (all its parts) instead of `data`.
        """
        reply = await self.call_with_labels(
            agent, skill, data, timeout=timeout, call_id=call_id, conversation=conversation,
            parent=parent, hops=hops, traceparent=traceparent, on_progress=on_progress,
            on_accepted=on_accepted, message=message, delegation=delegation)
        return reply.value

    async def call_with_labels(self, agent: str, skill: str, data: Any = None, *,
                               timeout: float = 30.0, call_id: str | None = None,
                               conversation: str | None = None, parent: str | None = None,
                               hops: int = 0, traceparent: str | None = None,
                               on_progress: ProgressHandler | None = None,
                               on_accepted: Callable[[dict[str, Any]], Any] | None = None,
                               message: dict[str, Any] | None = None,
                               delegation: str | None = None) -> Reply:
        """Like `call`, returning the output with the reply's effective label (`Reply`)."""
        call_id = call_id or new_id()
        if (same := self._calls.get(call_id)) is not None:  # the same call, already on its way
            value = await asyncio.shield(same.result)
            return Reply(value, same.labels, call_id)
        deadline = time.time() + timeout
        fields: dict[str, Any] = {
            "id": call_id, "kind": "call", "sender": self.agent, "target": f"{agent}.{skill}",
            "conversation": conversation or call_id, "parent": parent, "hops": hops,
            "traceparent": outgoing(traceparent),
            "deadline": round(deadline, 6),
            "body": {"message": message} if message is not None else call_body(data, call_id)}
        if delegation is not None:  # acting for another agent, with the token it gave us
            fields["body"] = {**fields["body"], "delegation": delegation}
        loop = asyncio.get_running_loop()
        pending = _PendingCall(fields, loop.create_future(), deadline, timeout, on_progress)
        self._calls[call_id] = pending
        try:
            answer = await self.request(fields)
            if on_accepted is not None:
                on_accepted(answer)
            while True:
                wait = pending.deadline + RESULT_GRACE - time.time()
                try:
                    value = await asyncio.wait_for(asyncio.shield(pending.result),
                                                   max(wait, 0.01))
                    return Reply(value, pending.labels, call_id)
                except TimeoutError:
                    if time.time() >= pending.deadline + RESULT_GRACE:
                        raise CallTimeout("timeout", f"no answer from the hub for {agent}.{skill} "
                                          f"within {timeout:.1f}s (+{RESULT_GRACE:.0f}s grace)",
                                          call_id=call_id) from None
        finally:
            self._calls.pop(call_id, None)

    async def reply(self, call: dict[str, Any], body: dict[str, Any]) -> None:
        """Answer a delivered call (durably: re-sent after a reconnect until the hub answers)."""
        fields = {
            "id": new_id(), "kind": "reply", "sender": self.agent, "target": call["sender"],
            "conversation": call["conversation"], "parent": call["id"],
            "hops": call.get("hops", 0), "traceparent": child_traceparent(call["traceparent"]),
            "body": body}
        try:
            await self.settling(fields, timeout=60.0)
        except GateDenied as exc:  # the hub fails the call for its caller, saying why
            if exc.code == "duplicate_reply":
                return  # re-sent after a reconnect: the hub already had it
            log.error("%s: the hub refused our reply to call %s: %s", self.agent, call["id"],
                      exc)

    async def progress(self, call: dict[str, Any], note: str | None = None,
                       extend: float | None = None,
                       artifact: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if note is not None:
            body["note"] = note
        if extend is not None:
            body["extend"] = extend
        if artifact is not None:
            body["artifact"] = artifact
        return await self.request({
            "id": new_id(), "kind": "progress", "sender": self.agent, "target": call["sender"],
            "conversation": call["conversation"], "parent": call["id"],
            "hops": call.get("hops", 0), "traceparent": child_traceparent(call["traceparent"]),
            "body": body}, durable=False)

    async def relabel(self, kind: str, agent: str, conversation: str,
                      **body: Any) -> dict[str, Any]:
        """`endorse` or `declassify` `agent`'s context in `conversation` (needs the grant)."""
        fields = self._control(kind, agent, body)
        fields["conversation"] = conversation
        return await self.request(fields, durable=False)

    async def approve(self, call_id: str, *, approve: bool = True, reason: str = ""
                      ) -> dict[str, Any]:
        """Decide on a call held for approval (needs an `approve` grant for its target)."""
        return await self.request(self._control("approve", call_id, {
            "decision": "approve" if approve else "refuse", "reason": reason}), durable=False)

    async def delegate(self, to: str, rights: list[str], *, ttl: float = 3600.0,
                       from_token: str | None = None) -> str:
        """A token letting agent `to` call `rights` (agent.skill) for this agent — or, with
        `from_token`, passing on part of a delegation this agent holds; the hub refuses
        anything wider than what this agent has (or was given)."""
        body: dict[str, Any] = {"rights": rights, "ttl": ttl}
        if from_token is not None:
            body["from_token"] = from_token
        answer = await self.request(self._control("delegate", to, body), durable=False)
        return str(answer["token"])

    def _on_deliver(self, frame: dict[str, Any]) -> None:
        wire = frame.get("env") or {}
        origin = self._origin(frame)
        kind = wire.get("kind")
        if origin is None:
            log.error("%s: dropped a delivered %s whose origin signature does not verify",
                      self.agent, kind)
            if kind == "reply":
                self._settle(wire.get("parent"), InterlinkError(
                    "the reply's origin signature does not verify; it was not trusted"))
            return
        if "labels" in frame:  # what the hub says this carries (declared, joined with taint)
            wire = {**wire, "effective_labels": frame["labels"]}
        if kind == "call":
            if self.on_call is None:
                self._spawn(self.reply(wire, {"error": {
                    "stage": "agent", "code": "no_skills",
                    "reason": f"{self.agent} is a client and serves no skills", "rule": None}}))
            else:
                self._spawn(self.on_call(wire, origin))
        elif kind == "reply":
            body = wire.get("body") or {}
            answered = self._calls.get(wire.get("parent") or "")
            if answered is not None and isinstance(frame.get("labels"), dict):
                answered.labels = frame["labels"]
            if body.get("state") == "input_required":
                try:
                    prompt = body_data(body)
                except ValueError:
                    prompt = ""
                self._settle(wire.get("parent"), InputRequired(
                    prompt if isinstance(prompt, str) else json.dumps(prompt),
                    call_id=wire.get("parent")))
            elif "error" in body:
                err = body["error"] or {}
                self._settle(wire.get("parent"), SkillFailed(
                    err.get("code", "skill_error"), err.get("reason", ""),
                    call_id=wire.get("parent"), stage=err.get("stage", "skill")))
            else:
                try:
                    self._settle(wire.get("parent"), None, body_data(body))
                except ValueError as exc:
                    self._settle(wire.get("parent"), SkillFailed(
                        "bad_reply", f"the reply carries no A2A message: {exc}"))
        elif kind == "progress":
            pending = self._calls.get(wire.get("parent") or "")
            if pending is not None:
                body = wire.get("body") or {}
                extend = body.get("extend")
                extra = float(extend) if isinstance(extend, int | float) else pending.timeout
                pending.deadline = max(pending.deadline, time.time() + max(extra, 0.0))
                pending.progress.append(body)
                if pending.on_progress is not None:
                    pending.on_progress(body)

    def _settle(self, call_id: str | None, exc: Exception | None, value: Any = None) -> None:
        pending = self._calls.get(call_id or "")
        if pending is None or pending.result.done():
            return
        if exc is not None:
            pending.result.set_exception(exc)
        else:
            pending.result.set_result(value)

    def _on_failed(self, call_id: str, error: dict[str, Any]) -> None:
        pending = self._calls.get(call_id)
        if pending is not None and not pending.result.done():
            cls = CallTimeout if error.get("code") == "timeout" else CallError
            pending.result.set_exception(cls(error.get("code", "failed"),
                                             error.get("reason", ""), call_id=call_id,
                                             stage=error.get("stage", "calls")))

    def _fail_calls(self, exc: Exception, *, forget: bool = False) -> None:
        for pending in self._calls.values():
            if not pending.result.done():
                pending.result.set_exception(exc)
        if forget:
            self._calls.clear()

    async def _resend_calls(self) -> None:
        for pending in list(self._calls.values()):
            if pending.fields["id"] not in self._outbox:
                await self._send_fields(pending.fields)
