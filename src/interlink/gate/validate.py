"""validate: does the content have the shape its destination promises?

A publish must carry an A2A message with the event's data, no bigger than
`hub.max_event_bytes`, and matching the latest registered schema of its topic. A memory
operation must name valid keys and revisions, and carry a JSON value no bigger than
`hub.max_memory_value_bytes`. A call's input must match its skill's input schema (from the
target's registered card) and a reply's output the skill's output schema, nested no deeper
than `hub.max_depth`: the hub does not pass on what an agent promised not to produce. A reply
refused here fails the call for the caller too (`bad_output`).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

from ..envelope import body_data
from ..errors import GateDenied
from ..names import key_error, prefix_error
from .context import GateContext
from .lookups import CallLookup, CardLookup, SchemaLookup
from .stage import deny


class Validate:
    name = "validate"

    def __init__(self, schemas: SchemaLookup, cards: CardLookup, calls: CallLookup, *,
                 max_event_bytes: int, max_memory_value_bytes: int, max_depth: int) -> None:
        self.schemas = schemas
        self.cards = cards
        self.calls = calls
        self.max_event_bytes = max_event_bytes
        self.max_memory_value_bytes = max_memory_value_bytes
        self.max_depth = max_depth

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
        if env.kind == "memory":
            problem = self._memory_problem(env.body)
            if problem is not None:
                code, reason = problem
                return deny(self.name, code, reason)
            return None
        if env.kind == "call":
            return await self._skill_data(ctx, "input")
        if env.kind == "reply" and "error" not in env.body \
                and env.body.get("state") != "input_required":
            return await self._skill_data(ctx, "output")
        if env.kind != "publish":
            return None
        try:
            data = body_data(env.body)
        except ValueError as exc:
            return deny(self.name, "bad_event", f"a publish carries an A2A message: {exc}")
        size = len(json.dumps(data, separators=(",", ":")))
        if size > self.max_event_bytes:
            return deny(self.name, "too_large",
                        f"the event's data is {size} bytes; events may carry at most "
                        f"{self.max_event_bytes} (hub.max_event_bytes). Put large content in "
                        "shared memory or a file and publish a reference")
        topic = self.schemas.schema(env.target)
        if topic is not None:
            errors = sorted(topic.validator.iter_errors(data), key=lambda e: list(e.path))
            if errors:
                where = "/" + "/".join(str(p) for p in errors[0].absolute_path)
                return deny(self.name, "schema_mismatch",
                            f"the event does not match version {topic.version} of the schema "
                            f"of {env.target}: at {where}: {errors[0].message}"
                            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                            f"schemas.{env.target}: v{topic.version}")
        return None

    def _memory_problem(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """(code, reason) for what is wrong with a memory operation, or None."""
        op = body["op"]
        allowed = MEMORY_FIELDS[op]
        unknown = sorted(set(body) - allowed - {"op"})
        if unknown:
            return "bad_request", f"memory {op} takes {sorted(allowed)}, not {unknown}"
        if "key" in allowed:
            if "key" not in body:
                return "bad_request", f"memory {op} needs a `key`"
            if problem := key_error(body["key"]):
                return "bad_key", problem
        if (problem := prefix_error(body.get("prefix", ""))) is not None:
            return "bad_key", problem
        if "value" in allowed:
            if "value" not in body:
                return "bad_request", f"memory {op} needs a `value` (any JSON; null is fine)"
            try:
                size = len(json.dumps(body["value"], allow_nan=False, separators=(",", ":")))
            except ValueError:
                return "bad_value", "the value is not JSON (NaN and Infinity are not JSON)"
            if size > self.max_memory_value_bytes:
                return "too_large", (
                    f"the value is {size} bytes; memory values may be at most "
                    f"{self.max_memory_value_bytes} (hub.max_memory_value_bytes). Split it "
                    "over several keys, or store a reference")
        if op == "update" and not _revision(body.get("expect"), minimum=0):
            return "bad_request", ("update needs `expect`: the revision you read (0: only if "
                                   "the key is absent); use put to write unconditionally")
        if "expect" in body and op == "delete" and not _revision(body["expect"], minimum=1):
            return "bad_request", "expect must be a revision (a positive integer)"
        if "after_revision" in body and not _revision(body["after_revision"], minimum=0):
            return "bad_request", "after_revision must be a revision (an integer >= 0)"
        ttl = body.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not 0 < ttl <= 10 * 365 * 86400):
            return "bad_request", f"ttl must be a number of seconds > 0, not {ttl!r}"
        based_on = body.get("based_on")
        if based_on is not None:
            if not isinstance(based_on, dict) or len(based_on) > 64:
                return "bad_request", "based_on maps up to 64 keys to the revisions you read"
            for key, revision in based_on.items():
                if problem := key_error(key):
                    return "bad_key", f"in based_on: {problem}"
                if not _revision(revision, minimum=0):
                    return "bad_request", (f"based_on[{key!r}] must be the revision you read "
                                           "(0: the key was absent)")
        return None


    async def _skill_data(self, ctx: GateContext, side: str) -> GateDenied | None:
        """A call's input or a reply's output against the skill's declared schema."""
        env = ctx.env
        assert env is not None
        code = f"bad_{side}"
        if side == "input":
            agent, skill = env.call_target()
        else:
            record = await ctx.call(self.calls, env.parent or "")
            if record is None:
                return None  # authorize already refused replies to unknown calls
            agent, skill = record.target, record.skill
            ctx.fail_call = env.parent
        try:
            data = body_data(env.body)
        except ValueError as exc:
            return deny(self.name, code, f"the {side} carries no A2A message: {exc}")
        depth = _depth(data, self.max_depth + 1)
        if depth > self.max_depth:
            return deny(self.name, code, f"the {side} nests deeper than {self.max_depth} "
                        "levels (hub.max_depth)", "hub.max_depth")
        card = await self.cards.card(agent)
        schema = next((getattr(s, f"{side}_schema") for s in (card.skills if card else [])
                       if s.id == skill), None)
        if schema:
            errors = sorted(_validator(json.dumps(schema, sort_keys=True)).iter_errors(data),
                            key=lambda e: list(e.path))
            if errors:
                where = "/" + "/".join(str(p) for p in errors[0].absolute_path)
                return deny(self.name, code,
                            f"the {side} of {agent}.{skill} does not match its declared "
                            f"{side} schema: at {where}: {errors[0].message}",
                            f"cards.{agent}.skills.{skill}.{side}_schema")
        ctx.fail_call = None
        return None

MEMORY_FIELDS: dict[str, set[str]] = {
    "get": {"key"}, "history": {"key"}, "list": {"prefix"},
    "watch": {"prefix", "after_revision"}, "unwatch": {"watch"},
    "put": {"key", "value", "ttl", "based_on"},
    "update": {"key", "value", "expect", "ttl", "based_on"},
    "delete": {"key", "expect", "based_on"},
}


def _revision(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

@functools.lru_cache(maxsize=512)
def _validator(schema: str) -> Any:
    return jsonschema.Draft202012Validator(json.loads(schema))


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting no further than `limit`."""
    if limit <= 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in children), default=0)
