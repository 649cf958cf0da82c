from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlink.home import MeshHome
from interlink.server import RunningHub, background_hub

from .helpers import make_home

BLOG_TEAM = {"ideator": ["drafter.draft"], "drafter": ["editor.review", "editor.slow*"],
             "editor": [], "outsider": []}


@pytest.fixture
def home(tmp_path: Path) -> MeshHome:
    """A mesh home with a small blog team enrolled."""
    return make_home(tmp_path / "home", BLOG_TEAM)


@pytest.fixture
async def hub(home: MeshHome) -> AsyncIterator[RunningHub]:
    """A hub running in this event loop on a free port."""
    async with background_hub(home) as running:
        yield running
