"""The explicit, granted, audited ways past a flow rule: endorse, declassify, and approval of
a held call (pay the bill whose payee came from a fetched file)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, CallError, GateDenied, SkillContext, connect
from interlink.home import MeshHome
from interlink.policy import Clearance
from interlink.server import background_hub

from ..helpers import HubProcess, audit_records, interlink_cli, make_home, wait_until


def build(root: Path) -> MeshHome:
    home = make_home(root, {"reader": ["bank.*", "outsider.note"], "bank": [], "web": [],
                            "officer": [], "human": [], "outsider": []})
    policy = home.load_policy()
    agents = policy.agents
    agents["web"].label = {"integrity": "untrusted", "provenance": ["web"],
                           "level": "confidential", "tags": ["finance"]}
    agents["web"].calls = []
    agents["reader"].calls = ["bank.*", "outsider.note", "web.fetch"]
    agents["reader"].clearance = Clearance(level="confidential", tags=["finance"])
    agents["bank"].clearance = Clearance(level="confidential", tags=["finance"])
    agents["bank"].sensitive = ["transfer"]
    agents["bank"].needs_approval = ["pay"]
    agents["officer"].endorse = ["reader"]
    agents["officer"].declassify = ["reader"]
    agents["human"].approve = ["bank"]
    home.save_policy(policy)
    return home


def team(home: MeshHome, url: str) -> list[Agent]:
    web, bank, outsider = (Agent(n, credential=home.credential_path(n), hub=url)
                           for n in ("web", "bank", "outsider"))

    @web.skill("fetch")
    async def fetch(ctx: SkillContext, req: Any) -> dict[str, Any]:
        return {"payee": "ACME Ltd", "amount": 120, "iban": "XX00 1234"}

    @bank.skill("transfer")
    async def transfer(ctx: SkillContext, req: dict[str, Any]) -> str:
        return f"sent {req['amount']}"

    @bank.skill("pay")
    async def pay(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        return {"paid": req["payee"], "trusted_by": ctx.labels.get("provenance")}

    @outsider.skill("note")
    async def note(ctx: SkillContext, req: Any) -> str:
        return "noted"

    return [web, bank, outsider]


async def test_endorse_and_declassify_are_granted_and_audited(tmp_path: Path) -> None:
    home = build(tmp_path / "home")
    async with background_hub(home) as hub:
        agents = team(home, hub.url)
        async with agents[0], agents[1], agents[2], \
                connect("reader", credential=home.credential_path("reader"),
                        hub=hub.url) as reader, \
                connect("officer", credential=home.credential_path("officer"),
                        hub=hub.url) as officer, \
                connect("human", credential=home.credential_path("human"),
                        hub=hub.url) as stranger:
            invoice = await reader.call("web", "fetch", {}, conversation="bill-1")
            with pytest.raises(GateDenied) as tainted:
                await reader.call("bank", "transfer", invoice, conversation="bill-1")
            assert tainted.value.code == "untrusted_input"
            with pytest.raises(GateDenied) as ungranted:
                await stranger.endorse("reader", "bill-1", reason="looks fine")
            assert ungranted.value.code == "not_granted"
            await officer.endorse("reader", "bill-1", reason="checked the invoice by phone")
            assert await reader.call("bank", "transfer", invoice,
                                     conversation="bill-1") == "sent 120"
            with pytest.raises(GateDenied) as secret:
                await reader.call("outsider", "note", {"total": 120}, conversation="bill-1")
            assert secret.value.code == "not_cleared"
            await officer.declassify("reader", "bill-1", level="internal",
                                     drop_tags=["finance"], reason="totals are public")
            assert await reader.call("outsider", "note", {"total": 120},
                                     conversation="bill-1") == "noted"
    records = await audit_records(home)
    endorsed = [r for r in records if r.get("envelope", {}).get("kind") == "endorse"
                and r["decision"] == "accepted"]
    assert endorsed[0]["detail"]["reason"] == "checked the invoice by phone"
    assert endorsed[0]["detail"]["before"]["integrity"] == "untrusted"
    assert endorsed[0]["detail"]["after"]["integrity"] == "trusted"
    declassified = [r for r in records if r.get("envelope", {}).get("kind") == "declassify"]
    assert declassified[0]["detail"]["after"]["level"] == "internal"


async def test_untrusted_payment_waits_for_an_approver(tmp_path: Path) -> None:
    """pay() given untrusted data is held durably (across a hub kill) until a person approves
    it through the CLI; a refusal reaches the caller as a clear error."""
    home = build(tmp_path / "home")
    proc = HubProcess(home)
    await proc.start()

    interlink = interlink_cli(home)

    try:
        agents = team(home, proc.url)
        async with agents[0], agents[1], connect(
                "reader", credential=home.credential_path("reader"), hub=proc.url) as reader:
            invoice = await reader.call("web", "fetch", {}, conversation="bill-2")
            paying = asyncio.ensure_future(reader.call(
                "bank", "pay", invoice, conversation="bill-2", call_id="pay-1", timeout=60))
            listed: subprocess.CompletedProcess[str] | None = None

            async def held() -> bool:
                nonlocal listed
                listed = await asyncio.to_thread(interlink, "approvals")
                return "pay-1" in listed.stdout
            await wait_until(held, timeout=15)
            assert listed is not None and "needs_approval" in listed.stdout
            assert "XX00 1234" in listed.stdout  # the approver sees what it would do
            assert not paying.done()
            proc.kill()  # held durably: a restart loses nothing
            await proc.start()
            await wait_until(held, timeout=15)
            approved = await asyncio.to_thread(interlink, "approve", "pay-1", "--as", "human",
                                               "--reason", "invoice matches the order",
                                               "--hub", proc.url)
            assert approved.returncode == 0, approved.stderr
            result = await asyncio.wait_for(paying, 30)
            assert result["paid"] == "ACME Ltd"
            assert "approved:human" in result["trusted_by"]
            refused_call = asyncio.ensure_future(reader.call(
                "bank", "pay", invoice, conversation="bill-2", call_id="pay-2", timeout=60))

            async def second_held() -> bool:
                return "pay-2" in (await asyncio.to_thread(interlink, "approvals")).stdout
            await wait_until(second_held, timeout=15)
            denied = await asyncio.to_thread(interlink, "approve", "pay-2", "--as", "human",
                                             "--refuse", "--reason", "unknown payee",
                                             "--hub", proc.url)
            assert denied.returncode == 0, denied.stderr
            with pytest.raises(CallError) as no:
                await asyncio.wait_for(refused_call, 30)
            assert no.value.code == "denied" and "unknown payee" in no.value.reason
            stranger = await asyncio.to_thread(interlink, "approve", "pay-2", "--as", "reader",
                                               "--hub", proc.url)
            assert stranger.returncode == 3  # not granted to approve
    finally:
        proc.stop()
    records = await audit_records(home)
    decisions = [r["detail"] for r in records
                 if r.get("envelope", {}).get("kind") == "approve" and r.get("detail")]
    assert {d["approved"] for d in decisions} == {True, False}


async def test_permitted_call_graph(tmp_path: Path) -> None:
    """A conversation started at the workflow's entry may only make its listed calls: the
    drafter may ask the editor, but not the bank, even though its grants would allow it."""
    from interlink.policy import Workflow
    home = make_home(tmp_path / "home", {"ideator": ["drafter.draft"],
                                          "drafter": ["editor.review", "bank.transfer"],
                                          "editor": [], "bank": []})
    policy = home.load_policy()
    policy.workflows = {"blog": Workflow(entry="drafter.draft", edges=[
        "ideator->drafter.draft", "drafter->editor.*"])}
    home.save_policy(policy)
    async with background_hub(home) as hub:
        drafter, editor, bank = (Agent(n, credential=home.credential_path(n), hub=hub.url)
                                 for n in ("drafter", "editor", "bank"))

        @drafter.skill("draft")
        async def draft(ctx: SkillContext, req: dict[str, Any]) -> Any:
            review = await ctx.call("editor", "review", {})
            if req.get("steal"):
                return await ctx.call("bank", "transfer", {})
            return review

        @editor.skill("review")
        async def review(ctx: SkillContext, req: Any) -> str:
            return "fine"

        @bank.skill("transfer")
        async def transfer(ctx: SkillContext, req: Any) -> str:
            return "sent"

        async with drafter, editor, bank, connect(
                "ideator", credential=home.credential_path("ideator"), hub=hub.url) as ideator:
            assert await ideator.call("drafter", "draft", {}) == "fine"
            with pytest.raises(CallError) as off:
                await ideator.call("drafter", "draft", {"steal": True})
            assert "off_graph" in off.value.reason or "workflow" in off.value.reason
            async with connect("drafter", credential=home.credential_path("drafter"),
                               hub=hub.url) as direct:  # outside the workflow: grants decide
                assert await direct.call("bank", "transfer", {}) == "sent"
    assert any(r.get("code") == "off_graph" for r in await audit_records(home))
