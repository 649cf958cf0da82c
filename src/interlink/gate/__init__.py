"""The gate: one ordered pipeline of stages that every envelope passes through."""

from __future__ import annotations

from .authenticate import Authenticate, NonceCache
from .authorize import Authorize
from .context import GateContext, Session
from .decode import Decode
from .handoff import Commit, Deliver, Service
from .observe import Observe
from .pipeline import Pipeline
from .stage import Stage, deny
from .validate import Validate

__all__ = ["Authenticate", "Authorize", "Commit", "Decode", "Deliver", "GateContext",
           "NonceCache", "Observe", "Pipeline", "Service", "Session", "Stage", "Validate", "deny"]
