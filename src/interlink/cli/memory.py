"""Shared memory: ls, get, history, put."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape
from rich.table import Table

from ..home import MeshHome
from .base import (
    HomeOption,
    MemoryKey,
    Namespace,
    err,
    fail,
    friendly,
    home_store,
    json_argument,
    memory_app,
    out,
    run,
)

# Reads go to the store file directly (an operator's view, hub up or down); writes go through
# the hub as an enrolled agent, so the gate, the grants and the audit apply.

AsAgent = Annotated[str | None, typer.Option(
    "--as", help="Read through the hub as this enrolled agent (its grants apply) instead of "
                 "from the store file.")]


async def _memory_entries(mesh: MeshHome, namespace: str, op: str, key: str) -> list[Any]:
    from ..names import key_error, namespace_error, prefix_error
    from ..services.memory import MEMORY_BUCKET, entry_dict
    if problem := namespace_error(namespace) or (
            prefix_error(key) if op == "list" else key_error(key)):
        raise fail(problem, code=2)
    async with home_store(mesh) as store:
        kv = await store.kv(MEMORY_BUCKET, history=mesh.load_policy().hub.memory_history)
        full = f"{namespace}/{key}"
        if op == "list":
            entries = await kv.items(full)
        elif op == "history":
            entries = await kv.history(full)
        else:
            entry = await kv.get(full)
            entries = [entry] if entry else []
        return [entry_dict(namespace, e) for e in entries]


async def _memory_via_hub(mesh: MeshHome, as_agent: str, hub: str | None, namespace: str,
                          op: str, fields: dict[str, Any]) -> dict[str, Any]:
    from ..sdk import connect
    async with connect(as_agent, credential=mesh.credential_path(as_agent), hub=hub) as m:
        return await m.connection.memory_request(namespace, op, fields)


def _show_entries(entries: list[dict[str, Any]], *, as_json: bool, title: str) -> None:
    if as_json:
        out.print_json(json.dumps(entries))
        return
    if not entries:
        out.print(f"[dim]{title}: nothing[/]")
        return
    table = Table(title=title)
    for column in ("key", "rev", "value", "by", "when", "labels"):
        table.add_column(column, justify="right" if column == "rev" else "left")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
        if e.get("expires"):
            when += f" (expires in {max(0.0, e['expires'] - time.time()):.0f}s)"
        value = ("[red](deleted)[/]" if e.get("change") == "del" else
                 rich_escape(json.dumps(e["value"], ensure_ascii=False)[:80]))
        table.add_row(e["key"], str(e["revision"]), value, e.get("by") or "", when,
                      json.dumps(e["labels"]) if e.get("labels") else "")
    out.print(table)


@memory_app.command("ls")
@friendly
def memory_ls(namespace: Namespace, prefix: Annotated[str, typer.Argument(
                  help="Only keys starting with this.")] = "",
              home: HomeOption = None, as_agent: AsAgent = None,
              hub: Annotated[str | None, typer.Option(help="Hub URL (with --as).")] = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
              ) -> None:
    """List the live keys of NAMESPACE starting with PREFIX.

    Example: interlink memory ls blog drafts/"""
    mesh = MeshHome(home)
    entries = (run(_memory_via_hub(mesh, as_agent, hub, namespace, "list",
                                   {"prefix": prefix}))["entries"]
               if as_agent else run(_memory_entries(mesh, namespace, "list", prefix)))
    _show_entries(entries, as_json=as_json, title=f"{namespace}/{prefix}*")


@memory_app.command("get")
@friendly
def memory_get(namespace: Namespace, key: MemoryKey, home: HomeOption = None,
               as_agent: AsAgent = None,
               hub: Annotated[str | None, typer.Option(help="Hub URL (with --as).")] = None
               ) -> None:
    """Print a key's value (JSON) and, on stderr, its revision and writer.

    Example: interlink memory get blog style-guide --as editor"""
    mesh = MeshHome(home)
    if as_agent:
        entry = run(_memory_via_hub(mesh, as_agent, hub, namespace, "get",
                                    {"key": key})).get("entry")
        entries = [entry] if entry else []
    else:
        entries = run(_memory_entries(mesh, namespace, "get", key))
    if not entries:
        raise fail(f"{namespace}/{key} is not set (absent, deleted or expired)",
                   f"`interlink memory ls {namespace}` lists what is there", code=4)
    e = entries[0]
    out.print_json(json.dumps(e["value"]))
    err.print(f"[dim]revision {e['revision']}, written by {e['by']} at "
              f"{time.strftime('%H:%M:%S', time.localtime(e['ts']))}[/]")


@memory_app.command("history")
@friendly
def memory_history(namespace: Namespace, key: MemoryKey, home: HomeOption = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                   ) -> None:
    """Every kept revision of a key, oldest first (deletes included).

    Example: interlink memory history blog style-guide"""
    entries = run(_memory_entries(MeshHome(home), namespace, "history", key))
    _show_entries(entries, as_json=as_json, title=f"history of {namespace}/{key}")


@memory_app.command("put")
@friendly
def memory_put(namespace: Namespace, key: MemoryKey,
               value: Annotated[str, typer.Argument(metavar="JSON", help="The value, as JSON.")],
               as_agent: Annotated[str, typer.Option(
                   "--as", help="Write as this enrolled agent (needs read-write).")],
               home: HomeOption = None,
               expect: Annotated[int | None, typer.Option(
                   help="Only if the key is at this revision (0: only if absent).")] = None,
               ttl: Annotated[float | None, typer.Option(help="Expire after seconds.")] = None,
               hub: Annotated[str | None, typer.Option(help="Hub URL (default from the "
                                                            "credential).")] = None) -> None:
    """Write a JSON value to NAMESPACE/KEY through the hub, as an enrolled agent.

    Example: interlink memory put blog style-guide '{"tone": "warm"}' --as editor --expect 1"""
    from ..sdk import StaleRevision
    payload = json_argument(value)
    fields: dict[str, Any] = {"key": key, "value": payload}
    if expect is not None:
        fields["expect"] = expect
    if ttl is not None:
        fields["ttl"] = ttl
    try:
        answer = run(_memory_via_hub(MeshHome(home), as_agent, hub, namespace,
                                     "update" if expect is not None else "put", fields))
    except StaleRevision as exc:
        raise fail(exc.reason, f"read it again: `interlink memory get {namespace} {key}`",
                   code=3) from None
    out.print(f"[green]✓[/] {namespace}/{key} is at revision {answer['revision']}")
