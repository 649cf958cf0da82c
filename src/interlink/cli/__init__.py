"""The `interlink` command: a thin shell over the SDK, the mesh home and the store. One module
per group of commands; `base` holds what they share."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

# Each module registers its commands; `interlink --help` lists their groups in this order.
from . import hub  # noqa: F401

# isort: split
from . import agents, calls, events  # noqa: F401

# isort: split
from . import audit, memory, replay, traces  # noqa: F401
from .base import app, out


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        out.print(f"interlink {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Interlink: the communication layer between AI agents."""


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
