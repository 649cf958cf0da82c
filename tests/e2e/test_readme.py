"""The README's commands, run as a new user would: every shell block, in order, in a fresh
folder outside the repository, with the installed `interlink` on PATH. A README that rots (a
renamed flag, a path that only works inside the clone, a step that needs an unwritten grant)
fails here.

What the test adds to the README, and nothing more:
- a block marked `<!-- readme-test: skip (why) -->` is not run (the reason is in the README);
  a block marked `<!-- readme-test: file NAME -->` is saved as NAME, as the text above it asks;
- commands a user runs "in another terminal" and leaves running (`interlink serve`, a live
  `interlink tail`) are started in the background, and after a block that starts the hub the
  test waits for it to answer, as a user waits for its first line;
- the port 7750 becomes a free one (in the commands and, after `interlink init`, in mesh.yaml),
  so this test never meets another hub on the machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ..helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = re.compile(r"<!--\s*readme-test:\s*(skip|file)\s*(.*?)\s*-->\s*$")
LONG_RUNNING = re.compile(r"^\s*interlink (serve|mcp)\b|^\s*interlink tail\b(?!.*--no-follow)")


@dataclass
class Block:
    line: int
    lang: str
    text: str
    mark: str | None = None
    argument: str = ""


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        block = Block(start + 1, fence.group(1), "\n".join(lines[start + 1:j]) + "\n")
        above = lines[start - 1] if start else ""
        marked = MARK.match(above)
        if marked:
            block.mark, block.argument = marked.group(1), marked.group(2)
        blocks.append(block)
        i = j + 1
    return blocks


def backgrounded(script: str) -> str:
    """`interlink serve` & co. started with `&`, as if in another terminal."""
    out = []
    for line in script.splitlines():
        if LONG_RUNNING.search(line) and not line.split("  #")[0].rstrip().endswith("&"):
            command, _, comment = line.partition("  #")
            line = f"{command.rstrip()} &" + (f"  #{comment}" if comment else "")
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_readme_marks_only_what_cannot_run_here() -> None:
    blocks = readme_blocks(README.read_text())
    skipped = [b for b in blocks if b.mark == "skip"]
    assert all(b.argument.startswith("(") and len(b.argument) > 10 for b in skipped), \
        "every skipped block says why"
    shell = [b for b in blocks if b.lang == "sh" and b.mark != "skip"]
    assert len(skipped) <= 4 and len(shell) >= 10, (len(skipped), len(shell))
    assert any(b.mark == "file" for b in blocks)


def test_every_readme_command_works_from_a_fresh_folder(tmp_path_factory: pytest.TempPathFactory
                                                         ) -> None:
    work = tmp_path_factory.mktemp("readme-user")
    assert ROOT not in work.parents
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("INTERLINK_") and key != "VIRTUAL_ENV"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", COLUMNS="160",
               PYTHONUNBUFFERED="1")
    groups: list[int] = []
    transcript: list[str] = []
    try:
        for number, block in enumerate(readme_blocks(README.read_text())):
            if block.mark == "skip":
                continue
            if block.mark == "file":
                (work / block.argument).write_text(block.text.replace("7750", str(port)))
                continue
            if block.lang != "sh":
                continue
            script = backgrounded(block.text.replace("7750", str(port)))
            log = work / f".block-{number}.log"
            with log.open("w") as out:
                process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script],
                                           cwd=work, env=env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                groups.append(process.pid)
                try:
                    code = process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    code = -1
            output = log.read_text()
            transcript.append(f"--- README line {block.line} ---\n{script}{output}")
            assert code == 0, (f"the README block at line {block.line} failed (exit {code}):\n"
                               f"{script}\n{output[-4000:]}")
            mesh = work / ".interlink" / "mesh.yaml"
            if "interlink init" in block.text:
                mesh.write_text(mesh.read_text().replace("port: 7750", f"port: {port}"))
            if re.search(r"^\s*interlink serve\b", block.text, re.M):
                _wait_for_hub(port, log)
        everything = "\n".join(transcript)
        (work / "transcript.txt").write_text(everything)
        shown = {  # what the README says the commands show
            "the call's answer": '"verdict": "approved"',
            "audit verify": "audit chain intact",
            "the replayed event": "blog.drafts.created#1 drafter",
            "the CAS write": '"tone": "warm"',
            "the agent's card": '"protocolVersion":"1.0"',
            "curl SendMessage": '{"result":{"task"',
            "the Python A2A client": "TASK_STATE_COMPLETED",
            "clear-taint": "taint is cleared"}
        missing = [what for what, text in shown.items() if text not in everything]
        assert not missing, f"not shown: {missing}\n{everything[-6000:]}"
    finally:
        for group in groups:
            for sig in (signal.SIGINT, signal.SIGKILL):
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.3)


def _wait_for_hub(port: int, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"`interlink serve` did not come up:\n{log.read_text()[-3000:]}")
