"""Interlink: the communication layer between AI agents."""

from __future__ import annotations

from .errors import (CallError, CallTimeout, ConfigError, ConnectionLost, GateDenied,
                     InterlinkError, SkillFailed)
from .sdk import Agent, Mesh, SkillContext, connect

__version__ = "0.1.0"

__all__ = ["Agent", "CallError", "CallTimeout", "ConfigError", "ConnectionLost", "GateDenied",
           "InterlinkError", "Mesh", "SkillContext", "SkillFailed", "__version__", "connect"]
