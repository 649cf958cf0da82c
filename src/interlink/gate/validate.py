"""validate: does the content have the shape its destination promises?

A publish must carry an A2A message with the event's data, no bigger than
`hub.max_event_bytes`, and matching the latest registered schema of its topic. (Skill input
and output schemas join here with the security issue.)
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from ..envelope import body_data
from ..errors import GateDenied
from .context import GateContext
from .stage import deny


class SchemaLookup(Protocol):
    def schema(self, topic: str) -> Any:
        """The topic's latest schema (with `version` and a jsonschema `validator`), or None."""


class Validate:
    name = "validate"

    def __init__(self, schemas: SchemaLookup, *, max_event_bytes: int) -> None:
        self.schemas = schemas
        self.max_event_bytes = max_event_bytes

    async def __call__(self, ctx: GateContext) -> GateDenied | None:
        env = ctx.env
        assert env is not None
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
