"""The audit chain: verify, head, show."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape

from ..home import MeshHome
from .base import (
    HomeOption,
    audit_app,
    fail,
    friendly,
    home_store,
    out,
    run,
)


@audit_app.command("verify")
@friendly
def audit_verify(home: HomeOption = None) -> None:
    """Check the audit chain against its signed head: exits non-zero naming the first record
    changed, removed or reordered, a missing or rewritten checkpoint, or a chain cut short.

    Example: interlink audit verify"""
    from ..services.audit import verify_chain
    mesh = MeshHome(home)
    key = mesh.hub_key()

    async def check() -> Any:
        async with home_store(mesh) as store:
            return await verify_chain(await store.log("audit"), key.public,
                                      head_path=mesh.audit_head_path)

    report = run(check())
    for notice in report.notices:
        out.print(f"[yellow]![/] {rich_escape(notice)}", highlight=False)
    if not report.ok:
        raise fail(f"audit chain broken: {report.problems[0]}",
                   f"{report.records} records verified before it", code=1)
    head = ("it reaches the signed head in " + str(mesh.audit_head_path) if report.head_checked
            else f"[yellow]no signed head at {mesh.audit_head_path} to check it against[/]")
    out.print(f"[green]✓[/] audit chain intact: {report.records} records, "
              f"{report.checkpoints} signed checkpoints (sealed up to record "
              f"{report.sealed_upto}; {report.unsealed} after the last checkpoint); {head}",
              highlight=False)


@audit_app.command("head")
@friendly
def audit_head(home: HomeOption = None) -> None:
    """Print the latest signed audit checkpoint (keep a copy elsewhere: a chain rolled back
    together with its head file is caught by comparing with it).

    Example: interlink audit head > audit-head-$(date +%F).json"""
    from ..services.audit import read_head
    head = read_head(MeshHome(home).audit_head_path)
    if head is None:
        raise fail("no signed audit head yet", "the hub writes one at its first checkpoint")
    out.print_json(json.dumps(head))


@audit_app.command("show")
@friendly
def audit_show(home: HomeOption = None,
               last: Annotated[int, typer.Option(help="How many records.")] = 20) -> None:
    """Print the latest audit records.

    Example: interlink audit show --last 20"""
    from ..services.audit import RECORD, describe_record
    mesh = MeshHome(home)

    async def read() -> list[dict[str, Any]]:
        async with home_store(mesh) as store:
            log_ = await store.log("audit")
            start = max(1, await log_.last_seq() - 2 * last)
            items = await log_.read(start, subject=RECORD, limit=10 * last)
            return [json.loads(m.data) for m in items][-last:]

    for rec in run(read()):
        out.print(describe_record(rec), highlight=False, markup=False, soft_wrap=True)
