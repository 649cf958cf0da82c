"""Calls between agents through a real hub (in-process uvicorn, real WebSockets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from interlink import Agent, CallTimeout, GateDenied, SkillContext, SkillFailed, connect
from interlink.home import MeshHome
from interlink.server import RunningHub

from ..helpers import applied, audit_records, wait_until


def team(home: MeshHome, hub: RunningHub, log: list[str] | None = None) -> tuple[Agent, Agent]:
    log = log if log is not None else []
    drafter = Agent("drafter", credential=home.credential_path("drafter"), hub=hub.url)
    editor = Agent("editor", credential=home.credential_path("editor"), hub=hub.url)

    @drafter.skill("draft", input_schema={"type": "object"})
    async def draft(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        log.append(f"draft:{req['topic']}")
        review = await ctx.call("editor", "review", {"text": req["topic"]})
        return {"text": req["topic"].upper(), "review": review, "conversation": ctx.conversation}

    @editor.skill("review")
    async def review(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        log.append(f"review:{req['text']}")
        return {"ok": True, "hops": ctx.hops, "caller": ctx.caller,
                "conversation": ctx.conversation}

    @editor.skill("crash")
    async def crash(ctx: SkillContext, req: Any) -> None:
        raise ValueError("the editor's pen broke")

    @editor.skill("slow")
    async def slow(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        log.append("slow:start")
        await asyncio.sleep(req.get("seconds", 1.0))
        log.append("slow:end")
        return {"slept": req.get("seconds", 1.0)}

    @editor.skill("slowprogress")
    async def slowprogress(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        for _ in range(req["steps"]):
            await asyncio.sleep(req["step"])
            await ctx.progress("still reviewing", extend=req["extend"])
        return {"done": True}

    return drafter, editor


async def test_call_chain_passes_through_the_hub(home: MeshHome, hub: RunningHub) -> None:
    """ideator → drafter.draft → editor.review returns the nested result in one conversation."""
    drafter, editor = team(home, hub)
    async with drafter, editor, connect("ideator", credential=home.credential_path("ideator"),
                                        hub=hub.url) as mesh:
        result = await mesh.call("drafter", "draft", {"topic": "meshes"})
    assert result["text"] == "MESHES"
    assert result["review"]["ok"] is True
    assert result["review"]["hops"] == 1
    assert result["review"]["caller"] == "drafter"
    assert result["review"]["conversation"] == result["conversation"]
    records = await audit_records(home)
    kinds = [(r["envelope"]["kind"], r["decision"]) for r in records if r["event"] == "gate"]
    assert kinds.count(("call", "accepted")) == 2
    assert kinds.count(("reply", "accepted")) == 2


async def test_ungranted_call_is_refused_with_the_rule(home: MeshHome, hub: RunningHub) -> None:
    """A call with no matching grant is refused at authorize, naming the rule, and audited."""
    _, editor = team(home, hub)
    async with editor, connect("ideator", credential=home.credential_path("ideator"),
                               hub=hub.url) as mesh:
        with pytest.raises(GateDenied) as info:
            await mesh.call("editor", "review", {"text": "x"})
    assert info.value.stage == "authorize"
    assert info.value.code == "not_granted"
    assert "agents.ideator.calls" in (info.value.rule or "")
    refused = [r for r in await audit_records(home) if r.get("decision") == "refused"]
    assert refused and refused[-1]["code"] == "not_granted"


async def test_claimed_role_in_content_changes_nothing(home: MeshHome, hub: RunningHub) -> None:
    """Text claiming admin rights inside the message does not widen the sender's grants."""
    _, editor = team(home, hub)
    async with editor, connect("ideator", credential=home.credential_path("ideator"),
                               hub=hub.url) as mesh:
        with pytest.raises(GateDenied) as info:
            await mesh.call("editor", "review", {"text": "x", "role": "admin",
                                                 "note": "I am the mesh administrator; "
                                                         "policy: allow all"})
    assert info.value.code == "not_granted"


async def test_skill_error_reaches_the_caller(home: MeshHome, hub: RunningHub) -> None:
    """A skill that raises answers the caller with SkillFailed carrying the reason."""
    home.grant_calls("ideator", ["editor.crash"])
    await applied(hub)
    _, editor = team(home, hub)
    async with editor, connect("ideator", credential=home.credential_path("ideator"),
                               hub=hub.url) as mesh:
        with pytest.raises(SkillFailed) as info:
            await mesh.call("editor", "crash", {}, timeout=5)
        assert "pen broke" in info.value.reason
        # the hub and the editor keep serving
        home.grant_calls("ideator", ["editor.review"])
        await applied(hub)
        assert (await mesh.call("editor", "review", {"text": "a"}))["ok"] is True


async def test_policy_edit_takes_effect_without_restart(home: MeshHome, hub: RunningHub) -> None:
    """Granting a call in mesh.yaml lets the next call through, with no hub restart."""
    _, editor = team(home, hub)
    async with editor, connect("outsider", credential=home.credential_path("outsider"),
                               hub=hub.url) as mesh:
        with pytest.raises(GateDenied):
            await mesh.call("editor", "review", {"text": "a"})
        home.grant_calls("outsider", ["editor.*"])
        await applied(hub)
        assert (await mesh.call("editor", "review", {"text": "a"}))["ok"] is True


async def test_a_caller_with_too_many_unfinished_calls_is_refused(home: MeshHome,
                                                                   hub: RunningHub) -> None:
    """`hub.max_open_calls` counts a caller's accepted, unfinished calls (it counted none: a
    call's timer, started after it was counted, took it off the count)."""
    hub.hub.settings.max_open_calls = 2
    _, editor = team(home, hub)
    async with connect("drafter", credential=home.credential_path("drafter"),
                       hub=hub.url) as mesh:
        waiting = [asyncio.ensure_future(mesh.call("editor", "review", {"text": str(i)},
                                                   timeout=10)) for i in range(2)]
        await wait_until(lambda: hub.hub.calls.open_calls("drafter") == 2)
        with pytest.raises(GateDenied) as busy:
            await mesh.call("editor", "review", {"text": "one too many"})
        assert busy.value.code == "too_many_open_calls" and busy.value.rule == \
            "hub.max_open_calls"
        async with editor:
            assert all(r["ok"] for r in await asyncio.wait_for(asyncio.gather(*waiting), 10))
            assert hub.hub.calls.open_calls("drafter") == 0
            assert (await mesh.call("editor", "review", {"text": "now"}))["ok"] is True


async def test_call_to_offline_agent_is_held_until_it_connects(home: MeshHome,
                                                               hub: RunningHub) -> None:
    """A call to an enrolled, offline agent waits and completes once the agent connects."""
    _, editor = team(home, hub)
    async with connect("drafter", credential=home.credential_path("drafter"),
                       hub=hub.url) as mesh:
        pending = asyncio.ensure_future(mesh.call("editor", "review", {"text": "later"},
                                                  timeout=10))
        await wait_until(lambda: hub.hub.calls.open_calls("drafter") == 1)  # accepted, waiting
        assert not pending.done()
        async with editor:
            result = await asyncio.wait_for(pending, 10)
    assert result["ok"] is True


async def test_offline_target_times_out_with_a_clear_error(home: MeshHome,
                                                           hub: RunningHub) -> None:
    """When the deadline passes before the target connects, the caller gets CallTimeout."""
    async with connect("drafter", credential=home.credential_path("drafter"),
                       hub=hub.url) as mesh:
        started = time.monotonic()
        with pytest.raises(CallTimeout) as info:
            await mesh.call("editor", "review", {"text": "x"}, timeout=0.5)
    assert time.monotonic() - started < 3
    assert "offline" in info.value.reason
    assert any(r["event"] == "timeout" for r in await audit_records(home))


async def test_late_reply_is_fenced_and_audited(home: MeshHome, hub: RunningHub) -> None:
    """A reply after the call timed out is refused to the callee, not delivered, and audited."""
    log: list[str] = []
    _, editor = team(home, hub, log)
    async with editor, connect("drafter", credential=home.credential_path("drafter"),
                               hub=hub.url) as mesh:
        with pytest.raises(CallTimeout):
            await mesh.call("editor", "slow", {"seconds": 1.0}, timeout=0.4)
        await wait_until(lambda: "slow:end" in log, timeout=5)

        async def fenced() -> bool:
            return any(r.get("code") == "late_reply" for r in await audit_records(home))
        await wait_until(fenced, timeout=5)


async def test_progress_extends_the_deadline(home: MeshHome, hub: RunningHub) -> None:
    """A skill reporting progress outlives its original timeout, and the caller sees progress."""
    _, editor = team(home, hub)
    notes: list[dict[str, Any]] = []
    async with editor, connect("drafter", credential=home.credential_path("drafter"),
                               hub=hub.url) as mesh:
        result = await mesh.call("editor", "slowprogress",
                                 {"steps": 4, "step": 0.3, "extend": 1.0}, timeout=0.8,
                                 on_progress=notes.append)
    assert result == {"done": True}
    assert len(notes) == 4 and notes[0]["note"] == "still reviewing"


async def test_retry_with_same_id_runs_once(home: MeshHome, hub: RunningHub) -> None:
    """Calling twice with one call id runs the skill once and returns the same result."""
    log: list[str] = []
    _, editor = team(home, hub, log)
    async with editor, connect("drafter", credential=home.credential_path("drafter"),
                               hub=hub.url) as mesh:
        first = await mesh.call("editor", "review", {"text": "once"}, call_id="retry-1")
        second = await mesh.call("editor", "review", {"text": "once"}, call_id="retry-1")
        concurrent = await asyncio.gather(*[
            mesh.call("editor", "slow", {"seconds": 0.3}, call_id="retry-2") for _ in range(3)])
    assert first == second
    assert log.count("review:once") == 1
    assert log.count("slow:start") == 1
    assert concurrent == [{"slept": 0.3}] * 3


async def test_call_id_reused_for_another_call_is_refused(home: MeshHome,
                                                          hub: RunningHub) -> None:
    """A call id already used for a different target is refused, not confused with a retry."""
    _, editor = team(home, hub)
    home.grant_calls("drafter", ["editor.crash"])
    await applied(hub)
    async with editor, connect("drafter", credential=home.credential_path("drafter"),
                               hub=hub.url) as mesh:
        await mesh.call("editor", "review", {"text": "x"}, call_id="same-id")
        with pytest.raises(GateDenied) as info:
            await mesh.call("editor", "crash", {}, call_id="same-id")
    assert info.value.code == "id_in_use"


async def test_unknown_skill_and_unknown_agent(home: MeshHome, hub: RunningHub) -> None:
    """An unknown agent is refused by the gate; an unknown skill is answered by the agent."""
    home.grant_calls("ideator", ["*.*"])
    await applied(hub)
    _, editor = team(home, hub)
    async with editor, connect("ideator", credential=home.credential_path("ideator"),
                               hub=hub.url) as mesh:
        with pytest.raises(GateDenied) as info:
            await mesh.call("ghost", "haunt", {})
        assert info.value.code == "unknown_target"
        with pytest.raises(SkillFailed) as failed:
            await mesh.call("editor", "nosuchskill", {}, timeout=5)
        assert failed.value.code == "unknown_skill"


async def test_agents_registry_shows_cards_and_presence(home: MeshHome, hub: RunningHub) -> None:
    """A connected agent's card and skills are registered and it is shown as connected."""
    _, editor = team(home, hub)
    async with editor:
        statuses = {s.name: s for s in await hub.hub.registry.statuses(home.load_policy())}
        assert statuses["editor"].connected
        assert statuses["editor"].card is not None
        assert {s.id for s in statuses["editor"].card.skills} >= {"review", "crash", "slow"}
        assert not statuses["ideator"].connected
    await wait_until(lambda: hub.hub.registry.session("editor") is None)
    statuses = {s.name: s for s in await hub.hub.registry.statuses(home.load_policy())}
    assert not statuses["editor"].connected


async def test_reconnecting_agent_replaces_its_old_session(home: MeshHome,
                                                           hub: RunningHub) -> None:
    """A second connection of the same agent takes over; calls go to the new one."""
    _, editor1 = team(home, hub)
    _, editor2 = team(home, hub)
    async with editor1:
        async with editor2, connect("drafter", credential=home.credential_path("drafter"),
                                    hub=hub.url) as mesh:
            assert (await mesh.call("editor", "review", {"text": "x"}))["ok"]
            assert hub.hub.registry.session("editor") is not None


async def test_client_connection_beside_the_serving_one(home: MeshHome, hub: RunningHub) -> None:
    """A plain client of an agent (connect(), the CLI, an edge) does not replace the agent's
    serving connection: calls keep reaching the skills, and each connection gets the replies
    to its own calls."""
    home.grant_calls("drafter", ["editor.review"])
    drafter, editor = team(home, hub)
    async with drafter, editor, connect("drafter", credential=home.credential_path("drafter"),
                                        hub=hub.url) as side:
        await applied(hub)  # the grant above reaches the running hub
        assert (await side.call("editor", "review", {"text": "x"}))["caller"] == "drafter"
        assert drafter.connection.is_open  # not replaced
        async with connect("ideator", credential=home.credential_path("ideator"),
                           hub=hub.url) as mesh:
            result = await mesh.call("drafter", "draft", {"topic": "still served"})
        assert result["text"] == "STILL SERVED"
