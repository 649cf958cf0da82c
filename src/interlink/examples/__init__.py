"""Runnable examples, shipped with the package so they work from wherever a user stands:
`interlink example` lists them, `interlink example NAME` runs one against the mesh home's hub,
`interlink example NAME --source` prints its code to copy."""

from __future__ import annotations

EXAMPLES = {"blog-team": "blog_team"}
"""Example name → module in this package."""
