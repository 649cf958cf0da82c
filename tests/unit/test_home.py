"""The mesh home as clients read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlink import home as home_module
from interlink.home import MeshHome, hub_address


def test_the_hub_address_is_read_once_per_version_of_mesh_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every agent a process starts asks where its hub is; with a thousand agents enrolled,
    parsing the whole policy for each one made connecting them take half a minute."""
    home = MeshHome(tmp_path)
    home.init(port=7001)
    parses = 0
    real = home_module.parse_policy

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal parses
        parses += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(home_module, "parse_policy", counting)
    for _ in range(50):
        assert hub_address(home.root) == ("ws://127.0.0.1:7001/ws", None)
    assert parses == 1

    policy = home.load_policy()
    policy.hub.port = 7002  # the hub moved: the next agent follows it
    home.save_policy(policy)
    assert hub_address(home.root)[0] == "ws://127.0.0.1:7002/ws"
