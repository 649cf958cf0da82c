"""The Python SDK: `Agent` for agents with skills and event handlers, `connect()` for plain
clients."""

from __future__ import annotations

from ._agent import Agent, EventContext, SkillContext
from ._client import Mesh, connect
from ._connection import Connection, Reply
from ._events import Event, Subscription
from ._memory import Memory, MemoryEntry, MemoryWatch, StaleRevision

__all__ = ["Agent", "Connection", "Event", "EventContext", "Memory", "MemoryEntry",
           "MemoryWatch", "Mesh", "Reply", "SkillContext", "StaleRevision", "Subscription",
           "connect"]
