"""The `interlink` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from interlink import Agent, SkillContext
from interlink.cli import app
from interlink.home import MeshHome

from ..helpers import HubProcess, env_python, interlink_cli

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """init makes a home; a second init refuses (exit 2) unless --force, which makes a new key."""
    home = str(tmp_path / "h")
    first = cli("init", "--home", home)
    assert first.exit_code == 0, first.output
    key = (tmp_path / "h" / "hub.key").read_bytes()
    again = cli("init", "--home", home)
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.output
    assert (tmp_path / "h" / "hub.key").read_bytes() == key
    forced = cli("init", "--home", home, "--force")
    assert forced.exit_code == 0
    assert (tmp_path / "h" / "hub.key").read_bytes() != key


def test_agent_add_writes_owner_only_credential_and_deny_all_entry(tmp_path: Path) -> None:
    """agent add writes a 0600 credential and a policy entry with no grants."""
    home = str(tmp_path / "h")
    cli("init", "--home", home)
    result = cli("agent", "add", "drafter", "--home", home)
    assert result.exit_code == 0, result.output
    cred = tmp_path / "h" / "agents" / "drafter.cred"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "h" / "hub.key").stat().st_mode) == 0o600
    policy = MeshHome(home).load_policy()
    assert policy.agents["drafter"].calls == []
    again = cli("agent", "add", "drafter", "--home", home)
    assert again.exit_code == 2 and "--renew" in again.output
    bad = cli("agent", "add", "Bad Name", "--home", home)
    assert bad.exit_code == 2 and "not a valid agent name" in bad.output


def test_commands_without_a_home_say_how_to_make_one(tmp_path: Path) -> None:
    """Using a folder that is not a mesh home tells the user to run init."""
    result = cli("agents", "--home", str(tmp_path / "nothing"))
    assert result.exit_code == 2
    assert "interlink init" in result.output


def test_audit_verify_detects_tampering(tmp_path: Path) -> None:
    """audit verify passes on the demo's chain and fails, naming the record, after an edit."""
    home = tmp_path / "demo"
    assert cli("demo", "--home", str(home)).exit_code == 0
    ok = cli("audit", "verify", "--home", str(home))
    assert ok.exit_code == 0 and "intact" in ok.output
    db = sqlite3.connect(home / "data" / "interlink.db")
    seq, data = db.execute("SELECT seq, data FROM messages WHERE log='audit' AND "
                           "subject='audit.record' ORDER BY seq LIMIT 1 OFFSET 4").fetchone()
    record = json.loads(data)
    record["decision"] = "accepted" if record.get("decision") == "refused" else "refused"
    db.execute("UPDATE messages SET data=? WHERE log='audit' AND seq=?",
               (json.dumps(record).encode(), seq))
    db.commit()
    db.close()
    bad = cli("audit", "verify", "--home", str(home))
    assert bad.exit_code == 1
    assert f"record {record['n']} was changed" in bad.output


def test_demo_tells_the_story(tmp_path: Path) -> None:
    """The demo runs the call chain, shows the refusal with its rule, and where data lives."""
    result = cli("demo", "--home", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.replace("│", " ").split())  # undo the terminal's line wrapping
    assert "editor says: approved with notes" in out
    assert "refused at authorize (not_granted)" in out
    assert "refused at label (untrusted_input)" in out  # the web taint followed the data
    assert "heard blog.drafts.created" in out and "watch" in out
    assert "no entry in agents.ideator.calls matches editor.review" in out
    assert "audit chain verified" in out
    assert "store (SQLite)" in out and "audit verify" in out


async def test_call_and_agents_commands_against_a_running_hub(tmp_path: Path) -> None:
    """`interlink call` prints the result; `interlink agents` shows who is connected;
    a refused call exits non-zero with the rule."""
    home = MeshHome(tmp_path / "h")
    home.init()
    home.add_agent("cli", calls=["echo.say"])
    home.add_agent("echo")
    hub = HubProcess(home)
    await hub.start()
    agent = Agent("echo", credential=home.credential_path("echo"), hub=hub.url)

    @agent.skill("say")
    async def say(ctx: SkillContext, req: dict[str, Any]) -> dict[str, Any]:
        return {"said": req["words"], "to": ctx.caller}

    interlink = interlink_cli(home)

    try:
        async with agent:
            called = await asyncio.to_thread(interlink, "call", "cli", "echo", "say",
                                             '{"words": "hi"}', "--hub", hub.url)
            assert called.returncode == 0, called.stderr
            assert json.loads(called.stdout) == {"said": "hi", "to": "cli"}
            listed = await asyncio.to_thread(interlink, "agents")
            assert "connected" in listed.stdout and "say" in listed.stdout
            refused = await asyncio.to_thread(interlink, "call", "echo", "cli", "x", "{}",
                                              "--hub", hub.url)
            assert refused.returncode == 3
            assert "not_granted" in refused.stderr and "rule:" in refused.stderr
            bad_json = await asyncio.to_thread(interlink, "call", "cli", "echo", "say", "{nope",
                                               "--hub", hub.url)
            assert bad_json.returncode == 1 and "not JSON" in bad_json.stderr
    finally:
        hub.stop()
    offline = await asyncio.to_thread(interlink, "call", "cli", "echo", "say", "{}", "--hub",
                                      hub.url)
    assert offline.returncode == 5 and "cannot reach the hub" in offline.stderr


async def test_publish_tail_and_topics_commands(tmp_path: Path) -> None:
    """`publish` commits and numbers events (a repeated id is a duplicate); `tail` shows them
    live with sequence, topic number and sender; `topics` shows counts and consumer lag."""
    home = MeshHome(tmp_path / "h")
    home.init()
    home.add_agent("pub")
    home.add_agent("reader")
    home.grant("pub", publish=["blog.*"])
    home.grant("reader", subscribe=["blog.>"])
    hub = HubProcess(home)
    await hub.start()

    interlink = interlink_cli(home)

    try:
        tail = subprocess.Popen(
            [sys.executable, "-m", "interlink", "tail", "blog.>", "--count", "2", "--home",
             str(home.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**env_python(), "COLUMNS": "200"})
        started = await asyncio.to_thread(tail.stderr.readline)  # it says where it starts
        assert "from log seq" in started, started
        first = await asyncio.to_thread(interlink, "publish", "pub", "blog.drafts",
                                        '{"title": "one"}', "--id", "e1", "--hub", hub.url)
        assert first.returncode == 0, first.stderr
        assert "blog.drafts #1" in first.stdout
        again = await asyncio.to_thread(interlink, "publish", "pub", "blog.drafts",
                                        '{"title": "one"}', "--id", "e1", "--hub", hub.url)
        assert "duplicate" in again.stdout and "#1" in again.stdout
        second = await asyncio.to_thread(interlink, "publish", "pub", "blog.news",
                                         '{"title": "two"}', "--hub", hub.url)
        assert "blog.news #1" in second.stdout
        refused = await asyncio.to_thread(interlink, "publish", "reader", "blog.news", "{}",
                                          "--hub", hub.url)
        assert refused.returncode == 3 and "agents.reader.publish" in refused.stderr
        shown, _ = await asyncio.to_thread(tail.communicate, timeout=30)
        lines = shown.strip().splitlines()
        assert len(lines) == 2
        assert "blog.drafts#1" in lines[0] and "pub" in lines[0] and '"one"' in lines[0]
        assert "blog.news#1" in lines[1]
        from interlink import connect
        async with connect("reader", credential=home.credential_path("reader"),
                           hub=hub.url) as reader:
            sub = await reader.subscribe("blog.>", durable="archive")
            event = await sub.get(5)
            await event.ack()
        listed = await asyncio.to_thread(interlink, "topics", "--json")
        assert listed.returncode == 0, listed.stderr
        report = json.loads(listed.stdout)
        assert {t["topic"]: t["events"] for t in report["topics"]} == {
            "blog.drafts": 1, "blog.news": 1}
        [archive] = report["consumers"]
        assert (archive["name"], archive["lag"]) == ("archive", 0)
        assert archive["ack_pending"] == 1  # delivered with the first, not acked: lag is 0
        bad = await asyncio.to_thread(interlink, "tail", "blog..x", "--no-follow")
        assert bad.returncode == 2 and "empty token" in bad.stderr
    finally:
        hub.stop()


async def test_memory_commands(tmp_path: Path) -> None:
    """`memory put` writes through the hub as an agent (grants and CAS apply); `ls`, `get`
    and `history` read the store; errors say what to do."""
    home = MeshHome(tmp_path / "h")
    home.init()
    home.add_agent("editor")
    home.add_agent("reader")
    hub = HubProcess(home)
    await hub.start()

    interlink = interlink_cli(home)

    try:
        granted = await asyncio.to_thread(interlink, "agent", "grant", "editor", "--memory",
                                          "blog=read-write")
        assert granted.returncode == 0, granted.stderr
        # a policy edit returns once the running hub applied it: nothing to wait for
        await asyncio.to_thread(interlink, "agent", "grant", "reader", "--memory", "blog=read")
        put = await asyncio.to_thread(interlink, "memory", "put", "blog", "guide",
                                      '{"tone": "plain"}', "--as", "editor", "--hub", hub.url)
        assert put.returncode == 0, put.stderr
        assert "revision 1" in put.stdout
        cas = await asyncio.to_thread(interlink, "memory", "put", "blog", "guide",
                                      '{"tone": "warm"}', "--as", "editor", "--expect", "1",
                                      "--hub", hub.url)
        assert "revision 2" in cas.stdout
        stale = await asyncio.to_thread(interlink, "memory", "put", "blog", "guide", '"x"',
                                        "--as", "editor", "--expect", "1", "--hub", hub.url)
        assert stale.returncode == 3 and "at revision 2, not 1" in stale.stderr
        denied = await asyncio.to_thread(interlink, "memory", "put", "blog", "guide", '"x"',
                                         "--as", "reader", "--hub", hub.url)
        assert denied.returncode == 3 and "read only" in denied.stderr
        got = await asyncio.to_thread(interlink, "memory", "get", "blog", "guide")
        assert json.loads(got.stdout) == {"tone": "warm"}
        assert "revision 2, written by editor" in got.stderr
        listed = await asyncio.to_thread(interlink, "memory", "ls", "blog", "--json")
        assert [(e["key"], e["revision"]) for e in json.loads(listed.stdout)] == [("guide", 2)]
        history = await asyncio.to_thread(interlink, "memory", "history", "blog", "guide",
                                          "--json")
        assert [e["value"] for e in json.loads(history.stdout)] == [
            {"tone": "plain"}, {"tone": "warm"}]
        missing = await asyncio.to_thread(interlink, "memory", "get", "blog", "nope")
        assert missing.returncode == 4 and "not set" in missing.stderr
        bad = await asyncio.to_thread(interlink, "memory", "ls", "Bad!")
        assert bad.returncode == 2 and "namespace" in bad.stderr
    finally:
        hub.stop()


def test_suspend_and_restore_flip_the_policy(tmp_path: Path) -> None:
    """The kill switch and its undo are one command each, and say what they did."""
    home = str(tmp_path / "h")
    cli("init", "--home", home)
    cli("agent", "add", "rogue", "--home", home)
    cut = cli("agent", "suspend", "rogue", "--home", home)
    assert cut.exit_code == 0 and "suspended" in cut.output
    assert MeshHome(home).load_policy().agents["rogue"].suspended
    back = cli("agent", "restore", "rogue", "--home", home)
    assert back.exit_code == 0 and not MeshHome(home).load_policy().agents["rogue"].suspended
    missing = cli("agent", "suspend", "nobody", "--home", home)
    assert missing.exit_code == 2 and "not enrolled" in missing.output


def test_every_command_has_an_example_and_every_argument_a_help_text() -> None:
    import typer

    def commands(group: Any, path: list[str]) -> Any:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group of commands
                yield from commands(command, [*path, name])
            else:
                yield " ".join([*path, name]), command

    found = dict(commands(typer.main.get_command(app), []))
    assert {"agent add", "memory put", "call", "example"} <= set(found)
    for name, command in found.items():
        assert "Example: interlink" in (command.help or "") or \
            "Example: TOKEN=$(interlink" in (command.help or ""), name
        for param in command.params:
            assert getattr(param, "help", None), f"interlink {name}: {param.name} has no help"
    usage = CliRunner().invoke(app, ["call", "--help"], env={"COLUMNS": "200"})
    assert "The agent to call." in usage.output and "Example: interlink call" in usage.output
