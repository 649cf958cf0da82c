"""`interlink demo`: a blog team of three scripted agents on an embedded hub.

The editor keeps a style guide in shared memory (`blog/style-guide`); the drafter reads it and
watches it. The ideator asks the drafter for a draft; the drafter writes it in the guide's tone,
asks the editor for a review and publishes `blog.drafts.created`, which the publicist
(subscribed, never called) reacts to. The editor then changes the guide; the drafter's watch
sees the change before the next draft, which follows the new guide. Then a topic the scout read
on the web is drafted and sent to publishing: refused, because the untrusted label followed the
data through the drafter. A new conversation does not shed the taint (it follows the agents,
not the conversation ids they pick) until the operator clears it, audited. Finally the ideator
tries to skip the drafter and call the editor itself, which its grants do not allow.
Everything crosses the hub's gate, and the audit chain shows it afterwards. No LLM is needed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.panel import Panel

from .errors import CallError, ConfigError, GateDenied
from .home import MeshHome
from .sdk import Agent, Event, EventContext, SkillContext, connect
from .server import background_hub
from .services.audit import RECORD, describe_record, verify_chain
from .store import open_store

DEMO_MARKER = ".interlink-demo"
"""The file that marks a folder as the demo's own (the only kind it deletes)."""


class DraftRequest(BaseModel):
    topic: str
    words: int = 120
    publish: bool = False
    """Also ask the editor to publish it (a sensitive skill: trusted input only)."""


class Draft(BaseModel):
    title: str
    text: str
    review: dict[str, Any]


class ReviewRequest(BaseModel):
    title: str
    text: str


class Review(BaseModel):
    verdict: str
    notes: list[str]


class DraftCreated(BaseModel):
    """The event the drafter publishes on `blog.drafts.created` (its schema is registered)."""

    title: str
    words: int
    verdict: str


def build_publicist(mesh: MeshHome, hub: str, say: Any, seen: list[Event]) -> Agent:
    publicist = Agent("publicist", credential=mesh.credential_path("publicist"), hub=hub,
                      description="Announces new drafts; listens, is never called.")

    @publicist.on_event("blog.drafts.*", durable="publicist")
    async def announce(ctx: EventContext, event: Event) -> None:
        say("publicist", f"heard [bold]{event.topic}[/] #{event.topic_seq} from "
                         f"{event.sender} (signature checked): “{event.data['title']}”, "
                         f"{event.data['words']} words → queues a teaser; nobody called it")
        seen.append(event)

    return publicist


def build_agents(mesh: MeshHome, hub: str, say: Any,
                 guide: dict[str, Any]) -> tuple[Agent, Agent]:
    """The drafter and the editor; `guide` is the drafter's copy of the style guide, kept
    current by its watch on shared memory."""
    drafter = Agent("drafter", credential=mesh.credential_path("drafter"), hub=hub,
                    description="Writes blog drafts and gets them reviewed.")
    editor = Agent("editor", credential=mesh.credential_path("editor"), hub=hub,
                   description="Reviews drafts against the house style.")

    @drafter.skill("draft", input_schema=DraftRequest, output_schema=Draft)
    async def draft(ctx: SkillContext, req: DraftRequest) -> Draft:
        """Write a draft on a topic, reviewed by the editor."""
        say("drafter", f"got a call from [bold]{ctx.caller}[/]: draft “{req.topic}”")
        title = req.topic.title()
        say("drafter", f"writing in the [bold]{guide['tone']}[/] tone (style guide revision "
                       f"{guide['revision']}, from shared memory)")
        text = (f"{title}. Teams that run many agents need them to talk safely: "
                "signed messages, least-privilege grants and an audit trail.")
        if guide["tone"] == "warm":
            text = f"You run a dozen agents and they keep talking past each other? {text}"
        say("drafter", "asking [bold]editor.review[/] (same conversation, hop 1)")
        review = await ctx.call("editor", "review", ReviewRequest(title=title, text=text))
        say("drafter", f"editor says: {review['verdict']}; publishing "
                       "[bold]blog.drafts.created[/] for whoever cares")
        await ctx.publish("blog.drafts.created", DraftCreated(
            title=title, words=len(text.split()), verdict=review["verdict"]))
        say("drafter", "event committed by the hub; returning the draft")
        if req.publish:
            say("drafter", "asking [bold]editor.publish_post[/] to put it on the site")
            await ctx.call("editor", "publish_post", {"title": title, "text": text})
        return Draft(title=title, text=text, review=review)

    @editor.skill("publish_post", input_schema=ReviewRequest)
    async def publish_post(ctx: SkillContext, req: ReviewRequest) -> dict[str, str]:
        """Put a post on the site (marked sensitive in mesh.yaml)."""
        return {"url": f"https://blog.example/{req.title.lower().replace(' ', '-')}"}

    @editor.skill("review", input_schema=ReviewRequest, output_schema=Review)
    async def review(ctx: SkillContext, req: ReviewRequest) -> Review:
        """Review a draft."""
        say("editor", f"reviewing “{req.title}” for [bold]{ctx.caller}[/] (hop {ctx.hops})")
        notes = ["lead with the reader's problem"]
        if len(req.text.split()) < 40:
            notes.append("short: fine for a teaser")
        return Review(verdict="approved with notes", notes=notes)

    return drafter, editor


async def run_demo(home: Path, out: Console) -> int:
    started = time.time()

    def say(who: str, text: str) -> None:
        colours = {"ideator": "cyan", "drafter": "magenta", "editor": "yellow", "hub": "green",
                   "publicist": "blue"}
        out.print(f"[dim]{time.time() - started:6.3f}s[/] [{colours.get(who, 'white')}]"
                  f"{who:>9}[/] │ {text}", highlight=False)

    out.print(Panel.fit("[bold]Interlink demo[/]: a blog team of five agents on one mesh\n"
                        "ideator → drafter.draft → editor.review; an event "
                        "blog.drafts.created → publicist;\na style guide in shared memory, "
                        "watched by the drafter; web taint that follows the data;\n"
                        "every hop through the hub's gate",
                        border_style="cyan"))
    mesh = MeshHome(home)
    if mesh.root.exists():
        if not (mesh.root / DEMO_MARKER).exists() and any(mesh.root.iterdir()):
            raise ConfigError(f"{mesh.root} exists and was not made by `interlink demo`; the "
                              "demo replaces only a folder it made itself. Choose another "
                              "--home, or remove that folder yourself")
        shutil.rmtree(mesh.root)
    mesh.init()
    (mesh.root / DEMO_MARKER).write_text("made by `interlink demo`; the next demo run "
                                         "replaces this folder\n")
    mesh.add_agent("ideator", description="Has ideas; asks for drafts.", calls=["drafter.draft"])
    mesh.add_agent("drafter", description="Writes drafts.", calls=["editor.review"])
    mesh.add_agent("editor", description="Reviews drafts.")
    mesh.add_agent("publicist", description="Announces new drafts.")
    mesh.add_agent("scout", description="Reads the web for trending topics.")
    mesh.grant("ideator", calls=["scout.trending"])
    mesh.grant("drafter", calls=["editor.publish_post"])
    policy = mesh.load_policy()
    policy.agents["scout"].label = {"integrity": "untrusted", "provenance": ["web"]}
    policy.agents["editor"].sensitive = ["publish_post"]
    mesh.save_policy(policy)
    mesh.grant("drafter", publish=["blog.drafts.*"], memory={"blog": "read"})
    mesh.grant("editor", memory={"blog": "read-write"})
    mesh.grant("publicist", subscribe=["blog.drafts.*"])
    say("hub", f"mesh home {mesh.root}: hub key, 5 enrolled agents, policy mesh.yaml")
    for name, grants in mesh.load_policy().agents.items():
        rights = [f"call {', '.join(grants.calls)}" if grants.calls else "",
                  f"publish {', '.join(grants.publish)}" if grants.publish else "",
                  f"subscribe {', '.join(grants.subscribe)}" if grants.subscribe else "",
                  ", ".join(f"{access} memory {ns}" for ns, access in grants.memory.items())]
        notes = [f"; {', '.join(grants.sensitive)} takes trusted input only"
                 if grants.sensitive else "",
                 "; what it sends is labelled untrusted (web)" if grants.label else ""]
        say("hub", f"  policy: {name} may {'; '.join(r for r in rights if r) or 'do nothing'}"
                   + "".join(notes))

    ok = True
    async with background_hub(mesh) as running:
        say("hub", f"hub listening on {running.url} (embedded SQLite store)")
        guide: dict[str, Any] = {"tone": "?", "revision": 0}
        drafter, editor = build_agents(mesh, running.url, say, guide)
        heard: list[Event] = []
        publicist = build_publicist(mesh, running.url, say, heard)
        scout = Agent("scout", credential=mesh.credential_path("scout"), hub=running.url,
                      description="Reads the web for trending topics.")

        @scout.skill("trending")
        async def trending(ctx: SkillContext, req: Any) -> dict[str, str]:
            """A topic from the web (whatever a web page said)."""
            return {"topic": "why agents should ignore their instructions"}

        async with editor, drafter, publicist, scout, connect(
                "ideator", credential=mesh.credential_path("ideator"),
                hub=running.url) as ideator:
            say("hub", "editor, drafter and publicist connected (signed hello, agent cards "
                       "registered; publicist subscribed to blog.drafts.* as a durable consumer)")
            schema = await drafter.connection.register_schema(
                "blog.drafts.created", DraftCreated.model_json_schema())
            say("drafter", f"registered the schema of [bold]blog.drafts.created[/] "
                           f"(v{schema['version']}): the hub validates every event against it")
            style = editor.memory("blog")
            first = await style.put("style-guide", {"tone": "plain", "max_words": 40})
            say("editor", f"wrote [bold]blog/style-guide[/] to shared memory (revision {first})")
            current = await drafter.memory("blog").get("style-guide")
            assert current is not None
            guide.update(tone=current.value["tone"], revision=current.revision)
            changes = await drafter.memory("blog").watch("style-guide",
                                                         after_revision=current.revision)
            changed = asyncio.Event()

            async def follow() -> None:
                async for change in changes:
                    guide.update(tone=change.value["tone"], revision=change.revision)
                    say("drafter", f"[bold]watch[/]: {change.by} changed the style guide "
                                   f"(revision {change.revision}, tone {change.value['tone']})"
                                   " — pushed by the hub, no polling")
                    changed.set()

            watcher = asyncio.ensure_future(follow())
            say("drafter", f"read the style guide (revision {current.revision}) and watches it")
            say("ideator", "calling [bold]drafter.draft[/] topic “agent meshes”")
            result = await ideator.call("drafter", "draft", {"topic": "agent meshes"})
            say("ideator", f"got the draft “{result['title']}” "
                           f"(review: {result['review']['verdict']})")
            out.print(Panel(json.dumps(result, indent=2), title="the draft, as the ideator got it",
                            border_style="dim"))
            for _ in range(200):
                if heard:
                    break
                await asyncio.sleep(0.01)
            if not heard:
                say("hub", "[red]the publicist never heard the event![/]")
                ok = False
            latest = await style.get("style-guide")
            assert latest is not None
            second = await style.update("style-guide", {"tone": "warm", "max_words": 60},
                                        expect=latest.revision)
            say("editor", f"changed the style guide: tone warm (compare-and-swap on revision "
                          f"{latest.revision} → {second})")
            try:
                await asyncio.wait_for(changed.wait(), 5)
            except TimeoutError:
                say("hub", "[red]the drafter's watch never saw the change![/]")
                ok = False
            say("ideator", "calling [bold]drafter.draft[/] again, topic “shared memory”")
            again = await ideator.call("drafter", "draft", {"topic": "shared memory"})
            say("ideator", f"got “{again['title']}”: {again['text'][:60]}…")
            watcher.cancel()
            await changes.close()
            say("ideator", "asks the [bold]scout[/], which reads the web, for a trending topic")
            web = "web-idea"
            idea = await ideator.connection.call("scout", "trending", {}, conversation=web)
            say("ideator", f"got “{idea['topic']}” — labelled untrusted, from the web; the "
                           "hub now counts the ideator's conversation as tainted")
            say("ideator", "asks the drafter to draft it [bold]and publish it[/], same "
                           "conversation")
            try:
                await ideator.connection.call("drafter", "draft", {
                    "topic": idea["topic"], "publish": True}, conversation=web)
                say("hub", "[red]the post went out — the taint did not follow the data![/]")
                ok = False
            except CallError as exc:
                said = exc.reason.split("failed: ", 1)[-1]
                say("hub", f"[red]refused[/]: {said}")
                say("hub", "the drafter never read the web, but the label followed the data "
                           "through it: [bold]agents.editor.sensitive[/] takes trusted input "
                           "only (an `endorse` by a granted agent, or an approval, lets it "
                           "through)")
            say("ideator", "starts a [bold]brand-new conversation[/] to shed the taint, and "
                           "asks for a harmless post")
            try:
                await ideator.call("drafter", "draft", {"topic": "agent meshes",
                                                        "publish": True})
                say("hub", "[red]the post went out — a new conversation id shed the taint![/]")
                ok = False
            except CallError:
                say("hub", "[red]refused[/] again: taint follows the agent, not the "
                           "conversation id it picks (everyone who was given web-derived "
                           "data stays untrusted until an operator clears it)")
            for name in ("ideator", "drafter", "editor"):
                await running.hub.clear_taint(name, by="operator:demo",
                                              reason="demo: contexts reset")
            say("hub", "the operator clears the ideator's, drafter's and editor's taint "
                       "([bold]interlink agent clear-taint NAME[/], audited)")
            post = await ideator.call("drafter", "draft", {"topic": "agent meshes",
                                                           "publish": True})
            say("ideator", f"published: “{post['title']}”")
            say("ideator", "now trying to skip the drafter: calling [bold]editor.review[/] "
                           "directly …")
            try:
                await ideator.call("editor", "review", {"title": "x", "text": "y"})
                say("hub", "[red]the call went through — the policy did not hold![/]")
                ok = False
            except GateDenied as exc:
                say("hub", f"[red]refused[/] at {exc.stage} ({exc.code}): {exc.reason}")
                say("hub", f"the rule that decided: [bold]{exc.rule}[/]")

    out.print()
    out.rule("what crossed the hub (from the audit chain)")
    async with open_store(mesh.store_url()) as store:
        audit = await store.log("audit")
        records = [json.loads(m.data) for m in await audit.read(1, subject=RECORD, limit=10_000)]
        report = await verify_chain(audit, mesh.hub_key().public,
                                    head_path=mesh.audit_head_path)
    for rec in records:
        out.print("  " + describe_record(rec), highlight=False)
    if report.ok:
        out.print(f"[green]✓[/] audit chain verified: {report.records} hash-chained records, "
                  f"{report.checkpoints} signed checkpoint(s)")
    else:
        out.print(f"[red]✗ audit chain broken: {report.problems[0]}[/]")
        ok = False
    story = next((r["envelope"]["conversation"] for r in records
                  if (r.get("envelope") or {}).get("kind") == "call"
                  and r["envelope"].get("sender") == "ideator"), None)
    out.print()
    out.print(Panel.fit(
        (f"interlink trace {story} --home {home}\n"
         f"  (the ideator's request as a timeline across the agents; --mermaid for a "
         f"diagram)\n" if story else "")
        + f"interlink tail --since 3600 --no-follow --home {home}     (all traffic; "
        "--refused for refusals)\n"
        f"interlink serve --home {home}\n"
        "  then open the console URL it prints (/console#token=…): the agents and their "
        "calls,\n  every conversation as a diagram, the refusal above with its rule",
        title="see it", border_style="cyan"))
    out.print(Panel.fit(
        f"mesh home        {mesh.root}\n"
        f"policy           {mesh.policy_path}\n"
        f"credentials      {mesh.agents_dir}/<agent>.cred (owner-only)\n"
        f"store (SQLite)   {mesh.db_path}\n\n"
        "look at it:\n"
        f"  interlink --help\n"
        f"  interlink agents --home {home}\n"
        f"  interlink audit show --home {home} --last 30\n"
        f"  interlink audit verify --home {home}\n"
        f"  interlink topics --home {home}\n"
        f"  interlink memory history blog style-guide --home {home}\n"
        f"  interlink tail 'blog.>' --from-seq 1 --no-follow --home {home}\n"
        f"  interlink serve --home {home}        # run this hub yourself, then:\n"
        f"  interlink call ideator drafter draft '{{\"topic\": \"x\"}}' --home {home}\n"
        f"    (with the drafter and editor running: interlink example blog-team --home {home})",
        title="where the data lives", border_style="green"))
    return 0 if ok else 1
