"""Agents run on uvloop where it is installed (a dependency on Linux and macOS)."""

from __future__ import annotations

import asyncio

from interlink.sdk._loop import run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_agent_processes_run_on_uvloop() -> None:
    assert run(_loop_module()).startswith("uvloop")
