"""The system under test for the A2A conformance kit (a2aproject/a2a-tck, branch 1.0-dev).

A hub with one mesh agent, `tck`, served over A2A at `/a2a/tck`, whose single skill acts on the
kit's message-id prefixes (the kit's `scenarios/*.feature`). The kit calls it as the enrolled
agent `tck-client`, which may call `tck.*`.

    python tests/tck/sut.py --port 7799 --open
    ./run_tck.py --sut-host http://127.0.0.1:7799/a2a/tck --level must     # from the kit

The 1.0-dev kit sends no credentials, so `--open` sets the hub's opt-in
`hub.a2a_anonymous_caller: {tck: tck-client}` (a request to /a2a/tck without an
`Authorization` header acts as tck-client); without it, callers need the printed bearer token.

Not a test module (pytest collects `test_*.py` only); `make tck` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from interlink import Agent, InputRequired, SkillContext
from interlink.home import MeshHome
from interlink.identity import issue_token
from interlink.server import background_hub

AGENT = "tck"
CALLER = "tck-client"
STREAMING_TIMEOUT = 2.0
"""Seconds; the kit's SUT templates wait twice this in the resubscribe scenario."""
FILE_PART = {"raw": "dGNr", "filename": "output.txt", "mediaType": "text/plain"}  # b"tck"
FILE_URL_PART = {"url": "https://example.com/output.txt", "filename": "output.txt",
                 "mediaType": "text/plain"}


def a2a(parts: list[dict[str, Any]], reply: str = "artifact", state: str = "completed"
        ) -> dict[str, Any]:
    """A skill result that tells the A2A edge exactly how to answer (see `A2A_RESULT` in
    `interlink/edges/a2a.py`): these parts as the result artifact, the final status message or
    a bare Message; the task COMPLETED or REJECTED."""
    return {"$a2a": {"parts": parts, "reply": reply, "state": state}}


async def run_scenario(ctx: SkillContext, req: Any) -> Any:
    """Act on the message id's prefix, longest prefixes first, like the kit's own SUTs."""
    message_id = str(ctx.message.get("messageId", ""))

    def prefix(name: str) -> bool:
        return message_id.startswith(name)

    # -- core operations (scenarios/core_operations.feature) ---------------------------------
    if prefix("tck-artifact-file-url"):
        return a2a([FILE_URL_PART])
    if prefix("tck-artifact-file"):
        return a2a([FILE_PART])
    if prefix("tck-artifact-text"):
        return "Generated text content"
    if prefix("tck-artifact-data"):
        return {"key": "value", "count": 42}
    if prefix("tck-message-response"):
        return a2a([{"text": "Direct message response"}], reply="message")
    if prefix("tck-input-required"):
        raise InputRequired("TCK needs more input")
    if prefix("tck-reject-task"):
        return a2a([{"text": "rejected"}], reply="status", state="rejected")
    if prefix("tck-complete-task"):
        return a2a([{"text": "Hello from TCK"}], reply="status")
    # -- streaming (scenarios/streaming.feature); WORKING comes from the edge ----------------
    if prefix("tck-stream-artifact-chunked"):
        await ctx.artifact(text="chunk-1 ", name="chunked", append=False, last_chunk=False)
        await ctx.artifact(text="chunk-2", name="chunked", append=True, last_chunk=True)
        return None
    if prefix("tck-stream-artifact-file"):
        return a2a([FILE_PART])
    if prefix("tck-stream-artifact-text"):
        await ctx.artifact(text="Streamed text content")
        return None
    if prefix("tck-stream-ordering-001"):
        await ctx.artifact(text="Ordered output")
        return None
    if prefix("tck-stream-001"):
        await ctx.artifact(text="Stream hello from TCK")
        return None
    if prefix("tck-stream-002"):
        return None
    if prefix("tck-stream-003"):
        await ctx.artifact(text="Stream task lifecycle")
        return None
    if prefix("test-resubscribe-message-id"):
        await ctx.progress("working")
        await asyncio.sleep(2 * STREAMING_TIMEOUT)
        return None
    # anything else (the kit's many `tck-<test>-<session>` ids): complete the task
    return a2a([{"text": f"Unhandled messageId prefix: {message_id}"}], reply="status")


def make_home(root: Path, *, open_endpoint: bool) -> MeshHome:
    home = MeshHome(root)
    if not home.exists():
        home.init()
    policy = home.load_policy()
    for name in (AGENT, CALLER):
        if name not in policy.agents:
            home.add_agent(name, description="A2A conformance kit: " + (
                "the system under test" if name == AGENT else "the kit's identity"))
    home.grant_calls(CALLER, [f"{AGENT}.*"])
    policy = home.load_policy()
    if open_endpoint:
        policy.hub.a2a_anonymous_caller = {AGENT: CALLER}
    else:
        policy.hub.a2a_anonymous_caller.pop(AGENT, None)
    home.save_policy(policy)
    return home


async def serve(args: argparse.Namespace, root: Path) -> None:
    home = make_home(root, open_endpoint=args.open)
    async with background_hub(home, host=args.host, port=args.port) as running:
        agent = Agent(AGENT, credential=home.credential_path(AGENT), hub=running.url,
                      description="Acts on the A2A conformance kit's message-id prefixes")
        agent.skill("tck", description="A2A conformance kit behaviours, chosen by the "
                                       "message id's prefix")(run_scenario)
        async with agent:
            url = f"http://{args.host}:{running.port}/a2a/{AGENT}"
            token = issue_token(running.hub.key, CALLER, days=1)
            print(f"SUT_URL={url}", flush=True)
            print(f"TOKEN={token}", flush=True)
            print(f"HOME={root}", flush=True)
            print("OPEN=" + ("yes: requests without a token act as " + CALLER
                             if args.open else "no: send Authorization: Bearer $TOKEN"),
                  flush=True)
            if args.ready_file:
                Path(args.ready_file).write_text(f"{url}\n{token}\n")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7799, help="0 picks a free port")
    parser.add_argument("--home", help="mesh home to use (made if missing); default: a temp dir")
    parser.add_argument("--open", action="store_true",
                        help="let requests without a token to /a2a/tck act as tck-client "
                             "(the kit cannot send credentials)")
    parser.add_argument("--ready-file", help="written with the URL and token once serving")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = Path(args.home) if args.home else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="interlink-tck-"))) / "home"
        asyncio.run(serve(args, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
