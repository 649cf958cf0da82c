"""Bad input against a real hub over real WebSockets: each is refused with a structured error
(stage, code, reason, rule where one decided), leaves an audit record, and the hub keeps
serving everyone else."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, SkillContext, connect
from interlink.envelope import new_id, new_traceparent, seal, signing_bytes
from interlink.home import MeshHome
from interlink.identity import CredentialFile, sign
from interlink.server import RunningHub

from ..helpers import RawClient, audit_records, call_env, make_home


def cred(home: MeshHome, name: str) -> CredentialFile:
    return CredentialFile.load(home.credential_path(name))


async def assert_hub_still_serves(home: MeshHome, hub: RunningHub) -> None:
    editor = Agent("editor", credential=home.credential_path("editor"), hub=hub.url)

    @editor.skill("review")
    async def review(ctx: SkillContext, req: Any) -> dict[str, bool]:
        return {"ok": True}

    async with editor, connect("drafter", credential=home.credential_path("drafter"),
                               hub=hub.url) as mesh:
        assert await mesh.call("editor", "review", {}) == {"ok": True}


async def refused_and_audited(home: MeshHome, answer: dict[str, Any], stage: str,
                              code: str) -> dict[str, Any]:
    assert answer["op"] == "refused", answer
    error = answer["error"]
    assert (error["stage"], error["code"]) == (stage, code), error
    assert error["reason"]
    records = [r for r in await audit_records(home) if r.get("decision") == "refused"]
    assert records and records[-1]["code"] == code and records[-1]["stage"] == stage
    return error


async def test_malformed_json(home: MeshHome, hub: RunningHub) -> None:
    """A frame that is not JSON is refused at decode."""
    async with RawClient.open(hub.url) as raw:
        await raw.send("{this is not json")
        await refused_and_audited(home, await raw.recv(), "decode", "malformed")
        await raw.send(json.dumps([1, 2, 3]))
        await refused_and_audited(home, await raw.recv(), "decode", "malformed")
        await raw.send(json.dumps({"id": "x", "kind": "call"}))
        error = await refused_and_audited(home, await raw.recv(), "decode", "malformed")
        assert "sender" in error["reason"]
    await assert_hub_still_serves(home, hub)


async def test_oversized_envelope(home: MeshHome, hub: RunningHub) -> None:
    """An envelope above max_envelope_bytes is refused at decode, saying the limit."""
    async with RawClient.open(hub.url) as raw:
        assert (await raw.hello(cred(home, "drafter")))["op"] == "accepted"
        big = call_env(cred(home, "drafter"), "editor.review", {"blob": "x" * 1_200_000})
        await raw.send(big)
        error = await refused_and_audited(home, await raw.recv(), "decode", "too_large")
        assert "1048576" in error["reason"]
    await assert_hub_still_serves(home, hub)


async def test_bad_signature_and_altered_in_transit(home: MeshHome, hub: RunningHub) -> None:
    """A forged signature, and a body altered after signing, are refused at authenticate."""
    drafter = cred(home, "drafter")
    async with RawClient.open(hub.url) as raw:
        env = seal({"id": new_id(), "kind": "hello", "sender": "drafter", "target": "hub",
                    "conversation": new_id(), "traceparent": new_traceparent(),
                    "body": {"credential": drafter.credential.model_dump(),
                             "challenge": raw.challenge["challenge"]}},
                   cred(home, "ideator").private())  # signed with someone else's key
        await raw.send(env)
        await refused_and_audited(home, await raw.answer_to(env["id"]), "authenticate",
                                  "bad_signature")
        assert (await raw.hello(drafter))["op"] == "accepted"
        altered = call_env(drafter, "editor.review", {"amount": 10})
        altered["body"]["message"]["parts"][0]["data"]["amount"] = 10_000
        await raw.send(altered)
        await refused_and_audited(home, await raw.answer_to(altered["id"]), "authenticate",
                                  "bad_signature")
    await assert_hub_still_serves(home, hub)


async def test_credential_from_another_hub(home: MeshHome, hub: RunningHub,
                                           tmp_path: Path) -> None:
    """A credential signed by another mesh's hub key is refused, naming both hubs."""
    other = make_home(tmp_path / "other", {"drafter": []})
    async with RawClient.open(hub.url) as raw:
        answer = await raw.hello(cred(other, "drafter"))
        error = await refused_and_audited(home, answer, "authenticate", "foreign_credential")
        assert "not by this hub" in error["reason"]
    await assert_hub_still_serves(home, hub)


async def test_forged_credential(home: MeshHome, hub: RunningHub) -> None:
    """A credential whose fields were changed after the hub signed it is refused."""
    drafter = cred(home, "drafter")
    forged_cred = drafter.credential.model_copy(update={"expires": time.time() + 10**9})
    forged = drafter.model_copy(update={"credential": forged_cred})
    async with RawClient.open(hub.url) as raw:
        answer = await raw.hello(forged)
        await refused_and_audited(home, answer, "authenticate", "bad_credential")


async def test_expired_credential(home: MeshHome, hub: RunningHub) -> None:
    """An expired credential is refused, saying when it expired and how to renew."""
    home.add_agent("oldtimer", days=-1)
    async with RawClient.open(hub.url) as raw:
        answer = await raw.hello(cred(home, "oldtimer"))
        error = await refused_and_audited(home, answer, "authenticate", "expired_credential")
        assert "--renew" in error["reason"]


async def test_replayed_envelope(home: MeshHome, hub: RunningHub) -> None:
    """The same signed envelope sent twice is refused the second time as a replay; a hello
    replayed on another connection fails its challenge."""
    drafter = cred(home, "drafter")
    async with RawClient.open(hub.url) as raw:
        hello = seal({"id": new_id(), "kind": "hello", "sender": "drafter", "target": "hub",
                      "conversation": new_id(), "traceparent": new_traceparent(),
                      "body": {"credential": drafter.credential.model_dump(),
                               "challenge": raw.challenge["challenge"]}}, drafter.private())
        await raw.send(hello)
        assert (await raw.answer_to(hello["id"]))["op"] == "accepted"
        env = call_env(drafter, "editor.review", {"n": 1})
        await raw.send(env)
        assert (await raw.answer_to(env["id"]))["op"] == "accepted"
        await raw.send(env)
        await refused_and_audited(home, await raw.answer_to(env["id"]), "authenticate",
                                  "replay")
    async with RawClient.open(hub.url) as raw2:
        await raw2.send(hello)
        await refused_and_audited(home, await raw2.answer_to(hello["id"]), "authenticate",
                                  "bad_challenge")


async def test_stale_timestamp(home: MeshHome, hub: RunningHub) -> None:
    """An envelope signed outside the clock-skew window is refused as stale."""
    drafter = cred(home, "drafter")
    async with RawClient.open(hub.url) as raw:
        await raw.hello(drafter)
        env = call_env(drafter, "editor.review", {})
        env["ts"] = time.time() - 3600
        env["sig"] = sign(drafter.private(), signing_bytes(env))
        await raw.send(env)
        await refused_and_audited(home, await raw.answer_to(env["id"]), "authenticate", "stale")


async def test_envelope_before_hello_and_sender_mismatch(home: MeshHome,
                                                         hub: RunningHub) -> None:
    """Envelopes on an unauthenticated connection, or claiming another sender, are refused."""
    drafter, ideator = cred(home, "drafter"), cred(home, "ideator")
    async with RawClient.open(hub.url) as raw:
        env = call_env(drafter, "editor.review", {})
        await raw.send(env)
        await refused_and_audited(home, await raw.answer_to(env["id"]), "authenticate",
                                  "not_authenticated")
        await raw.hello(drafter)
        spoof = call_env(ideator, "drafter.draft", {})  # ideator's envelope on drafter's line
        await raw.send(spoof)
        await refused_and_audited(home, await raw.answer_to(spoof["id"]), "authenticate",
                                  "sender_mismatch")


async def test_unknown_target_and_ungranted(home: MeshHome, hub: RunningHub) -> None:
    """An unknown target agent and an ungranted call are refused at authorize."""
    drafter = cred(home, "drafter")
    async with RawClient.open(hub.url) as raw:
        await raw.hello(drafter)
        ghost = call_env(drafter, "ghost.haunt", {})
        await raw.send(ghost)
        await refused_and_audited(home, await raw.answer_to(ghost["id"]), "authorize",
                                  "unknown_target")
        nope = call_env(drafter, "ideator.brainstorm", {})
        await raw.send(nope)
        error = await refused_and_audited(home, await raw.answer_to(nope["id"]), "authorize",
                                          "not_granted")
        assert error["rule"].startswith("default deny")
        bad = call_env(drafter, "not a target", {})
        await raw.send(bad)
        await refused_and_audited(home, await raw.answer_to(bad["id"]), "authorize",
                                  "bad_target")
    await assert_hub_still_serves(home, hub)


async def test_reply_from_someone_other_than_the_callee(home: MeshHome,
                                                        hub: RunningHub) -> None:
    """Only the agent a call was made to may answer it."""
    drafter, ideator = cred(home, "drafter"), cred(home, "ideator")
    async with RawClient.open(hub.url) as caller, RawClient.open(hub.url) as intruder:
        await caller.hello(drafter)
        await intruder.hello(ideator)
        call = call_env(drafter, "editor.review", {})
        await caller.send(call)
        assert (await caller.answer_to(call["id"]))["op"] == "accepted"
        reply = seal({"id": new_id(), "kind": "reply", "sender": "ideator", "target": "drafter",
                      "conversation": call["conversation"], "parent": call["id"],
                      "traceparent": new_traceparent(),
                      "body": {"message": {"role": "ROLE_AGENT", "parts": [{"data": 1}]}}},
                     ideator.private())
        await intruder.send(reply)
        error = await refused_and_audited(home, await intruder.answer_to(reply["id"]),
                                          "authorize", "not_callee")
        assert "editor" in error["reason"]


@pytest.mark.parametrize("kind", ["reply", "progress"])
async def test_answer_to_unknown_call(home: MeshHome, hub: RunningHub, kind: str) -> None:
    """A reply or progress naming a call that does not exist is refused."""
    editor = cred(home, "editor")
    async with RawClient.open(hub.url) as raw:
        await raw.hello(editor)
        env = seal({"id": new_id(), "kind": kind, "sender": "editor", "target": "drafter",
                    "conversation": new_id(), "parent": "no-such-call",
                    "traceparent": new_traceparent(), "body": {}}, editor.private())
        await raw.send(env)
        await refused_and_audited(home, await raw.answer_to(env["id"]), "authorize",
                                  "unknown_call")
