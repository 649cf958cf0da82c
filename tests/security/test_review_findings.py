"""Holes found by reviewing the gate as an attacker holding its own credential, each kept shut
by a test: a NaN deadline, forcing an honest agent into quarantine, laundering taint through an
answer's conversation, holding a breaker open, resetting the hop count, gaming the budget, and
using a suspended delegator's token."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, CallError, GateDenied, SkillContext, connect
from interlink.envelope import new_id, new_traceparent, reply_body, seal
from interlink.home import MeshHome
from interlink.identity import CredentialFile, sign
from interlink.policy import Clearance
from interlink.server import RunningHub, background_hub

from ..helpers import RawClient, applied, call_env, make_home


def cred(home: MeshHome, name: str) -> CredentialFile:
    return CredentialFile.load(home.credential_path(name))


def agent(home: MeshHome, hub: RunningHub, name: str) -> Agent:
    return Agent(name, credential=home.credential_path(name), hub=hub.url)


async def next_op(raw: RawClient, op: str, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        frame = await raw.recv(timeout)
        if frame.get("op") == op:
            return frame


async def test_nan_deadline_is_refused_and_poisons_nothing(tmp_path: Path) -> None:
    home = make_home(tmp_path / "h", {"mal": ["victim.work"], "friend": ["victim.work"],
                                      "victim": []})
    async with background_hub(home) as hub:
        victim = agent(home, hub, "victim")

        @victim.skill("work")
        async def work(ctx: SkillContext, req: Any) -> Any:
            return {"ok": True}

        async with victim, connect("friend", credential=home.credential_path("friend"),
                                   hub=hub.url) as friend, RawClient.open(hub.url) as raw:
            await raw.hello(cred(home, "mal"))
            # the SDK refuses to sign NaN; an attacker signs it anyway, in its own way
            env = call_env(cred(home, "mal"), "victim.work", {})
            env["deadline"] = float("nan")
            env["sig"] = sign(cred(home, "mal").private(), json.dumps(
                {k: v for k, v in env.items() if k != "sig"}, sort_keys=True,
                separators=(",", ":"), ensure_ascii=False).encode())
            await raw.send(json.dumps(env))
            answer = await raw.answer_to(env["id"])
            assert answer["op"] == "refused" and answer["error"]["code"] == "malformed"
            assert "NaN" in answer["error"]["reason"]
            assert await friend.call("victim", "work", {}, timeout=5) == {"ok": True}
    async with background_hub(home):  # and the hub starts again
        pass


async def test_a_caller_cannot_get_an_honest_callee_quarantined(tmp_path: Path) -> None:
    home = make_home(tmp_path / "h", {"mal": ["victim.echo"], "victim": []})
    policy = home.load_policy()
    policy.agents["victim"].clearance = Clearance(level="confidential", tags=["phi"])
    policy.hub.quarantine_after = 3
    home.save_policy(policy)
    async with background_hub(home) as hub:
        victim = agent(home, hub, "victim")

        @victim.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            return "ok"

        async with victim, RawClient.open(hub.url) as raw:
            await raw.hello(cred(home, "mal"))
            for i in range(3):  # claims data it may not see, to taint the victim's answer
                env = call_env(cred(home, "mal"), "victim.echo", {"x": i},
                               labels={"level": "confidential", "tags": ["phi"]})
                await raw.send(env)
                answer = await raw.answer_to(env["id"])
                assert answer["error"]["code"] == "label_above_clearance"
    assert not home.load_policy().agents["victim"].suspended


async def test_an_answer_cannot_move_to_another_conversation(tmp_path: Path) -> None:
    """An untrusted agent's reply naming a fresh conversation would leave the caller's real
    conversation untainted: refused, and the sensitive transfer never runs."""
    home = make_home(tmp_path / "h", {"user": ["b.pay"], "b": ["web.fetch", "c.transfer"],
                                      "web": [], "c": []})
    policy = home.load_policy()
    policy.agents["web"].label = {"integrity": "untrusted", "provenance": ["web"]}
    policy.agents["c"].sensitive = ["transfer"]
    home.save_policy(policy)
    ran: list[Any] = []
    async with background_hub(home) as hub:
        b, c = agent(home, hub, "b"), agent(home, hub, "c")

        @b.skill("pay")
        async def pay(ctx: SkillContext, req: Any) -> Any:
            page = await ctx.call("web", "fetch", {}, timeout=3)
            return await ctx.call("c", "transfer", page)

        @c.skill("transfer")
        async def transfer(ctx: SkillContext, req: Any) -> Any:
            ran.append(req)
            return "sent"

        async with b, c, RawClient.open(hub.url) as raw, connect(
                "user", credential=home.credential_path("user"), hub=hub.url) as user:
            web = cred(home, "web")
            await raw.hello(web)
            paying = asyncio.ensure_future(user.call("b", "pay", {}, timeout=15))
            call = (await next_op(raw, "deliver", timeout=10))["env"]
            reply_id = new_id()
            moved = seal({"id": reply_id, "kind": "reply", "sender": "web",
                          "target": call["sender"], "conversation": new_id(),
                          "parent": call["id"], "traceparent": new_traceparent(),
                          "body": reply_body({"amount": 10_000}, reply_id)}, web.private())
            await raw.send(moved)
            refused = await raw.answer_to(reply_id)
            assert refused["error"]["code"] == "wrong_conversation"
            with pytest.raises(CallError):
                await paying
    assert ran == []


async def test_nested_calls_cannot_reset_the_hop_count(tmp_path: Path) -> None:
    home = make_home(tmp_path / "h", {"ping": ["pong.hit"], "pong": ["ping.hit"],
                                      "starter": ["ping.hit"]})
    async with background_hub(home) as hub:
        ping = agent(home, hub, "ping")

        @ping.skill("hit")
        async def hit(ctx: SkillContext, req: Any) -> Any:
            return await ctx.call("pong", "hit", req, timeout=5)

        async with ping, RawClient.open(hub.url) as raw, connect(
                "starter", credential=home.credential_path("starter"), hub=hub.url) as starter:
            pong = cred(home, "pong")
            await raw.hello(pong)
            first = asyncio.ensure_future(starter.call("ping", "hit", {}, timeout=10))
            served = (await next_op(raw, "deliver", timeout=10))["env"]
            reset = call_env(pong, "ping.hit", {}, hops=0, parent=served["id"],
                             deadline=time.time() + 5)
            await raw.send(reset)
            answer = await raw.answer_to(reset["id"])
            assert answer["error"]["code"] == "broken_chain"
            first.cancel()


async def test_token_usage_must_be_a_real_count(tmp_path: Path) -> None:
    home = make_home(tmp_path / "h", {"user": ["llm.ask"], "llm": []})
    policy = home.load_policy()
    policy.hub.conversation_max_tokens = 100
    home.save_policy(policy)
    async with background_hub(home) as hub, RawClient.open(hub.url) as raw, connect(
            "user", credential=home.credential_path("user"), hub=hub.url) as user:
        llm = cred(home, "llm")
        await raw.hello(llm)
        conversation = "chat-1"

        async def ask(usage: Any) -> Any:
            asking = asyncio.ensure_future(user.call("llm", "ask", {}, timeout=10,
                                                     conversation=conversation))
            call = (await next_op(raw, "deliver", timeout=10))["env"]
            reply_id = new_id()
            body = {**reply_body("answer", reply_id), "usage": {"tokens": usage}}
            await raw.send(json.dumps(seal({
                "id": reply_id, "kind": "reply", "sender": "llm", "target": "user",
                "conversation": conversation, "parent": call["id"],
                "traceparent": new_traceparent(), "body": body}, llm.private())))
            return await asking

        assert await ask(-1_000_000) == "answer"     # no refund
        assert await ask(150) == "answer"            # the reply that goes over still arrives
        with pytest.raises(GateDenied) as over:      # ...and the next call is refused
            await user.call("llm", "ask", {}, conversation=conversation)
        assert over.value.code == "budget_exhausted"


async def test_a_suspended_delegator_stops_its_delegates(tmp_path: Path) -> None:
    home = make_home(tmp_path / "h", {"boss": ["records.read"], "helper": [], "records": []})
    async with background_hub(home) as hub:
        records = agent(home, hub, "records")

        @records.skill("read")
        async def read(ctx: SkillContext, req: Any) -> Any:
            return {"record": 42}

        async with records, connect("boss", credential=home.credential_path("boss"),
                                    hub=hub.url) as boss, connect(
                "helper", credential=home.credential_path("helper"), hub=hub.url) as helper:
            token = await boss.delegate("helper", ["records.read"])
            assert await helper.call("records", "read", {}, delegation=token) == {"record": 42}
            home.set_suspended("boss", True)
            await applied(hub)
            with pytest.raises(GateDenied) as cut:
                await helper.call("records", "read", {}, delegation=token)
            assert cut.value.code == "delegation_refused" and "boss" in cut.value.reason
