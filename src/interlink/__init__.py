"""Interlink: the communication layer between AI agents."""

from __future__ import annotations

from .errors import (
                     CallError,
                     CallTimeout,
                     ConfigError,
                     ConnectionLost,
                     GateDenied,
                     InputRequired,
                     InterlinkError,
                     SkillFailed,
                     UsageError,
)
from .sdk import (
                     Agent,
                     Event,
                     EventContext,
                     Memory,
                     MemoryEntry,
                     MemoryWatch,
                     Mesh,
                     Reply,
                     SkillContext,
                     StaleRevision,
                     Subscription,
                     connect,
)

__version__ = "0.1.0"

__all__ = ["Agent", "CallError", "CallTimeout", "ConfigError", "ConnectionLost", "Event",
           "EventContext", "GateDenied", "InputRequired", "InterlinkError", "Memory",
           "MemoryEntry", "MemoryWatch", "Mesh", "Reply", "SkillContext", "SkillFailed",
           "StaleRevision", "Subscription", "UsageError", "__version__", "connect"]
