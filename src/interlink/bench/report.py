"""The bench's output: a table for people, JSON for tools, a picture of the ratios."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import Figure


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return f"{value:,.2f} {unit}" if unit == "ms" else f"{value:,.0f} {unit}"


def table(figures: list[Figure]) -> Table:
    grid = Table(title="interlink bench: each figure beside its baseline from the same run "
                       "(median, p99 in brackets)", title_justify="left")
    for column, justify in (("figure", "left"), ("interlink", "right"), ("baseline", "left"),
                            ("baseline's", "right"), ("ratio", "right"), ("target", "right")):
        grid.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.3g}x"
        if f.met is not None:
            ratio = f"[green]{ratio}[/]" if f.met else f"[red]{ratio}[/]"
        target = "" if f.target is None else ("≤ " if f.lower_is_better else "≥ ") + \
            f"{f.target:g}x"
        grid.add_row(f"{f.section}: {f.name}" + (f"\n[dim]{f.note}[/]" if f.note else ""),
                     _value(f.value, f.unit) + (f" [dim]({f.p99:,.1f})[/]" if f.p99 else ""),
                     f.baseline or "",
                     _value(f.base, f.unit) + (f" [dim]({f.base_p99:,.1f})[/]"
                                               if f.base_p99 else ""),
                     ratio, target)
    return grid


def to_json(figures: list[Figure], path: Path, sections: list[str], quick: bool) -> None:
    document: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.node(),
        "python": platform.python_version(), "sections": sections, "quick": quick,
        "figures": [f.to_dict() for f in figures]}
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot(figures: list[Figure], path: Path) -> None:
    """A bar per ratio (log scale), the target marked; green where the target is met."""
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'interlink[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [f for f in figures if f.ratio is not None]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.2))
    names = [f"{f.section}: {f.name} vs {f.baseline}" for f in rows]
    colours = ["#2e7d32" if f.met else "#c62828" if f.met is False else "#607d8b"
               for f in rows]
    ax.barh(range(len(rows)), [f.ratio or 0 for f in rows], color=colours)
    for i, f in enumerate(rows):
        if f.target is not None:
            ax.plot([f.target, f.target], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(f.ratio or 0, i, f" {f.ratio:.3g}x", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xlabel("ratio to the baseline in the same run, log scale\n(black tick: the "
                  "target; latency and memory: lower is better, rates: higher)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def show(figures: list[Figure], console: Console) -> None:
    wide = Console(width=max(console.width, 150), file=console.file,
                   force_terminal=console.is_terminal)
    wide.print(table(figures))
