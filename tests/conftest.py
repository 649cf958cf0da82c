from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from interlink.home import MeshHome
from interlink.server import RunningHub, background_hub

from .helpers import NatsServer, make_home

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


@pytest.fixture(scope="session")
def nats_server() -> Iterator[str]:
    """A JetStream server for the whole run (tests keep apart by stream prefix)."""
    with tempfile.TemporaryDirectory(prefix="interlink-nats-") as storage:
        try:
            server = NatsServer(Path(storage)).start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        try:
            yield server.url
        finally:
            server.stop()
