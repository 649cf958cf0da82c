"""The Python SDK: `Agent` for agents with skills, `connect()` for plain clients."""

from __future__ import annotations

from ._agent import Agent, SkillContext
from ._client import Mesh, connect
from ._connection import Connection

__all__ = ["Agent", "Connection", "Mesh", "SkillContext", "connect"]
