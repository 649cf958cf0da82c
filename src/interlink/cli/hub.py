"""The hub and the whole: init, serve, demo, example, bench, config-reference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as rich_escape

from ..errors import ConfigError, StoreError
from ..home import MeshHome
from ..store import open_store
from .base import (
    HomeOption,
    app,
    err,
    fail,
    friendly,
    out,
    run,
)

PANEL = "The hub"


@app.command(rich_help_panel=PANEL)
@friendly
def init(home: HomeOption = None,
         force: Annotated[bool, typer.Option(help="Replace an existing home.")] = False,
         port: Annotated[int | None, typer.Option(help="The hub's port (default 7750).")] = None,
         tls: Annotated[bool, typer.Option(
             help="Also make a private CA and a hub certificate (tls/ in the home) and serve "
                  "wss:// and https:// with them; this home's agents and CLI trust the CA.")]
         = False,
         tls_host: Annotated[list[str] | None, typer.Option(
             help="Another name or address the hub certificate is for (repeatable; it "
                  "always covers localhost, 127.0.0.1 and this machine's name).")] = None,
         ) -> None:
    """Make a mesh home: the hub's key and a deny-all policy (mesh.yaml).

    Example: interlink init --home ./mesh --tls"""
    mesh = MeshHome(home)
    hub = mesh.init(force=force, port=port)
    out.print(f"[green]✓[/] mesh home ready at [bold]{mesh.root}[/]")
    out.print(f"  hub key      {mesh.hub_key_path}  (id {hub.id}, owner-only)")
    out.print(f"  policy       {mesh.policy_path}  (default deny)")
    if tls:
        from ..tls import default_hosts
        ca, cert, _ = mesh.make_tls(default_hosts(mesh.load_policy().hub.host)
                                    + list(tls_host or []))
        out.print(f"  TLS          {cert}  (signed by the private CA {ca}; give agents on "
                  "other machines that CA file: tls_ca= or $INTERLINK_CA)", highlight=False)
    out.print("next: [bold]interlink agent add NAME[/], then [bold]interlink serve[/]")


@app.command(rich_help_panel=PANEL)
@friendly
def serve(home: HomeOption = None,
          host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
          port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
          accept_audit_gap: Annotated[bool, typer.Option(
              help="Start even though the store's audit chain no longer reaches its signed "
                   "head (records were cut off); the gap is recorded in the chain for good.")]
          = False,
          log_level: Annotated[str, typer.Option(
              help="debug (every accepted envelope too), info (connections and refusals), "
                   "warning or error.")] = "info",
          log_format: Annotated[str, typer.Option(
              help="text, or json (one object per line, for log shippers).")] = "text",
          store: Annotated[str | None, typer.Option(
              help="The store: nats://HOST:PORT[,HOST:PORT] (NATS JetStream, shared by "
                   "several hubs) or sqlite:///PATH; default hub.store in mesh.yaml, else the "
                   "embedded SQLite file in the home's data/ folder.")] = None,
          tls_cert: Annotated[Path | None, typer.Option(
              help="Serve wss:// and https:// with this certificate chain (PEM); default "
                   "hub.tls in mesh.yaml.")] = None,
          tls_key: Annotated[Path | None, typer.Option(
              help="The private key of --tls-cert (PEM).")] = None,
          standby: Annotated[bool, typer.Option(
              help="On a shared store (NATS) served by other hubs: wait until none is "
                   "left, then start (their agents move here if they list this URL too). "
                   "Without it, a hub joins the hubs already serving the store.")]
          = False,
          ) -> None:
    """Run the hub (WebSocket at /ws; by default the embedded SQLite store in the home's data/
    folder).

    Example: interlink serve --port 7750 --store nats://127.0.0.1:4222"""
    from ..logs import configure
    from ..server import serve as serve_hub
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise fail(f"--log-level {log_level!r}: use debug, info, warning or error", code=2)
    if log_format not in ("text", "json"):
        raise fail(f"--log-format {log_format!r}: use text or json", code=2)
    mesh = MeshHome(home)
    mesh.require()
    policy = mesh.load_policy()
    configure(log_level, log_format)
    url = mesh.store_url(store)
    try:
        engine = open_store(url)  # a malformed URL is refused here, in words
    except ConfigError as exc:
        raise fail(str(exc), code=2) from None
    if engine.shared:  # a server: is it there? (the file is made on demand)
        from ..services.hubs import HubRoster

        async def reach() -> list[str]:
            async with engine:
                return [str(p) for p in await HubRoster(await engine.kv("hub"), "").others()]
        try:
            serving = run(reach())
        except StoreError as exc:
            raise fail(str(exc), "start the server, or fix hub.store / --store") from None
        if serving and standby:
            out.print(f"standing by: the store is served by {', '.join(serving)}; this hub "
                      "starts when no other is left", highlight=False)
        elif serving:
            out.print(f"joining {len(serving)} hub(s) serving this store: "
                      f"{', '.join(serving)}", highlight=False)
    scheme = "wss" if (tls_cert or policy.hub.tls) else "ws"
    out.print(f"hub for [bold]{mesh.root}[/] on "
              f"{scheme}://{host or policy.hub.host}:{port or policy.hub.port}/ws "
              f"(store {url.split('?')[0]}); Ctrl-C stops it", highlight=False)
    if (tls_cert is None) != (tls_key is None):
        raise fail("give both --tls-cert and --tls-key (or neither)", code=2)
    serve_hub(mesh, host=host, port=port, accept_audit_gap=accept_audit_gap,
              log_level=log_level.lower(), store_url=store,
              tls=(tls_cert, tls_key) if tls_cert and tls_key else None, standby=standby)




@app.command(rich_help_panel=PANEL)
@friendly
def demo(home: Annotated[Path, typer.Option(help="Where the demo's mesh home goes.")] =
         Path("interlink-demo")) -> None:
    """The whole story on the embedded store: five agents; calls, events, shared memory,
    labels that follow the data, and refusals with their rules.

    Example: interlink demo --home ./interlink-demo"""
    from ..demo import run_demo
    code = run(run_demo(home, out))
    raise typer.Exit(code)


@app.command(rich_help_panel=PANEL)
@friendly
def example(name: Annotated[str | None, typer.Argument(
                help="The example to run (omit it to list them).")] = None,
            home: HomeOption = None,
            source: Annotated[bool, typer.Option(
                "--source", help="Print the example's code instead of running it.")] = False,
            ) -> None:
    """Run an example's agents against the home's hub (they wait for it if it is not up), or
    print its code to copy and change.

    Example: interlink example blog-team &     (then: interlink call ideator drafter draft ...)"""
    import importlib.util
    import runpy

    from ..examples import EXAMPLES
    if name is None:
        for known in EXAMPLES:
            out.print(known)
        return
    if name not in EXAMPLES:
        raise fail(f"no example called {name!r}", "these exist: " + ", ".join(EXAMPLES), code=2)
    module = f"interlink.examples.{EXAMPLES[name]}"
    if source:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        print(Path(spec.origin).read_text(), end="")
        return
    mesh = MeshHome(home)
    mesh.require()
    os.environ["INTERLINK_HOME"] = str(mesh.root)  # where its agents find their credentials
    runpy.run_module(module, run_name="__main__", alter_sys=True)


SECTIONS = ("calls", "gate", "events", "memory", "scale")


@app.command(rich_help_panel=PANEL)
@friendly
def bench(sections: Annotated[str | None, typer.Option(
              help="Comma-separated: calls, gate, events, memory, scale (all by default); "
                   "engine (with --store).")] = None,
          quick: Annotated[bool, typer.Option(
              help="Fewer calls and sizes (about a minute): a smoke run, not figures.")] = False,
          json_file: Annotated[Path | None, typer.Option(
              "--json", help="Also write every figure as JSON to this file.")] = None,
          plot_file: Annotated[Path | None, typer.Option(
              "--plot", help="Also draw the ratios to this PNG (needs matplotlib).")] = None,
          store: Annotated[str | None, typer.Option(
              help="Measure a hub on this store engine (e.g. nats://127.0.0.1:4222) beside "
                   "the engine's own client and the embedded store: the engine section, run "
                   "alone unless --sections names others.")] = None,
          ) -> None:
    """Measure what the mesh costs, each figure beside its baseline in the same run: calls vs
    a direct a2a-sdk call (every server in its own process), the gate's security stages,
    events vs polling, memory vs the bare store, and 10/100/1,000 agents on one hub. Takes
    a few minutes; run it on a quiet machine and compare ratios, not absolute figures.

    Example: interlink bench --sections calls,gate --json bench.json --plot bench.png"""
    import importlib
    import tempfile

    from ..bench.report import plot, show, to_json
    if sections is None:
        sections = "engine" if store else ",".join(SECTIONS)
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    if store and "engine" not in chosen:
        chosen.append("engine")
    unknown = [s for s in chosen if s not in (*SECTIONS, "engine")]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown section(s) {unknown}; use "
                                 f"{', '.join(SECTIONS)} (and engine, with --store)",
                                 param_hint="--sections")
    if "engine" in chosen and not store:
        raise typer.BadParameter("the engine section measures the store given with --store",
                                 param_hint="--store")
    if store:
        try:
            open_store(store)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--store") from None

    def progress(text: str) -> None:
        err.print(f"[dim]… {rich_escape(text)}[/]", highlight=False)

    async def measure(work: Path) -> list[Any]:
        figures = []
        for section in chosen:
            module = importlib.import_module(f"interlink.bench.{section}")
            extra = {"store_url": store} if section == "engine" else {}
            figures += await module.run(work, quick=quick, progress=progress, **extra)
        return figures

    with tempfile.TemporaryDirectory(prefix="interlink-bench-") as work:
        figures = run(measure(Path(work)))
    show(figures, out)
    if json_file:
        to_json(figures, json_file, chosen, quick)
        out.print(f"figures written to {json_file}")
    if plot_file:
        plot(figures, plot_file)
        out.print(f"ratios drawn to {plot_file}")


@app.command("config-reference", rich_help_panel=PANEL)
def config_reference() -> None:
    """Print the configuration reference: every mesh.yaml key, its default and what it does
    (the same as docs/configuration.md, made from the code).

    Example: interlink config-reference > docs/configuration.md"""
    from ..reference import configuration_reference
    print(configuration_reference())
