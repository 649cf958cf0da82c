"""The crash loop: is anything the hub acknowledged ever lost, or done twice?

A real hub process is killed with SIGKILL at random moments (seeded; the seed is printed) and
started again on the same home and port, while clients in their own processes work through it:

* calls: a caller makes idempotent calls (`call-<i>`), each retried with the same id until it
  has its answer; a worker runs them and writes down every run;
* events: a publisher publishes events (`event-<i>`), each retried with the same id until the
  hub accepted it; a durable `on_event` handler writes down every event it processed;
* CAS: an incrementer adds 1 to a shared-memory counter by compare-and-swap, tagging each write
  with its own id so that after a lost answer it can read back whether the write took effect.

At the end, per kind: acknowledged but lost, and done more than once. Both must be zero.

    .venv/bin/python reliability/crash.py [--seed N] [--kills 5] [--calls 3000] \\
        [--events 3000] [--increments 1000]
    make reliability          # the same, with its defaults

Exit status 0 when nothing was lost or duplicated, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from interlink.server import HubProcess

HERE = Path(__file__).resolve()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


# -- the roles, each in its own process -------------------------------------------------------

def record(path: Path, line: str) -> None:
    """Append one line and make it durable before going on (the role may be killed too)."""
    with path.open("a") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


async def role_worker(home: Path, hub: str, out: Path) -> None:
    from interlink import Agent, SkillContext
    worker = Agent("worker", credential=home / "agents" / "worker.cred", hub=hub)

    @worker.skill("work")
    async def work(ctx: SkillContext, req: Any) -> dict[str, Any]:
        record(out, ctx.call_id)
        return {"done": req["i"]}

    await serve(worker)


async def role_consumer(home: Path, hub: str, out: Path) -> None:
    from interlink import Agent, Event, EventContext
    consumer = Agent("consumer", credential=home / "agents" / "consumer.cred", hub=hub)

    @consumer.on_event("jobs.*", durable="crash-jobs", ack_wait=5.0, max_deliver=1000)
    async def handle(ctx: EventContext, event: Event) -> None:
        record(out, event.id)

    await serve(consumer)


async def serve(agent: Any) -> None:
    """Serve until killed, waiting for a hub that is down when the agent starts."""
    from interlink import ConnectionLost
    while True:
        try:
            await agent.start()
            break
        except ConnectionLost:
            await asyncio.sleep(0.2)
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def connected(home: Path, name: str, hub: str) -> Any:
    """`connect()` that waits for a hub that is down at the moment (it is being restarted)."""
    from interlink import ConnectionLost, connect
    while True:
        mesh = connect(name, credential=home / "agents" / f"{name}.cred", hub=hub)
        try:
            await mesh.__aenter__()
            break
        except ConnectionLost:
            await asyncio.sleep(0.2)
    try:
        yield mesh
    finally:
        await mesh.__aexit__(None, None, None)


async def _patiently(what: Any, *, until: float) -> Any:
    """Retry `what()` through hub crashes (the SDK reconnects) until it answers."""
    from interlink import ConnectionLost, GateDenied
    from interlink.errors import CallTimeout
    delay = 0.05
    while True:
        try:
            return await what()
        except (TimeoutError, ConnectionLost, CallTimeout, OSError) as exc:
            if time.monotonic() > until:
                raise TimeoutError(f"gave up: {exc}") from exc
        except GateDenied as exc:
            if exc.code not in ("rate_limited", "contention") or time.monotonic() > until:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def role_caller(home: Path, hub: str, out: Path, n: int, deadline: float) -> None:
    until = time.monotonic() + deadline
    async with connected(home, "caller", hub) as mesh:
        semaphore = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            call_id = f"call-{i}"
            accepted = False

            def on_accepted(answer: dict[str, Any]) -> None:
                nonlocal accepted
                if not accepted:
                    accepted = True
                    record(out, f"accepted {call_id}")

            async with semaphore:
                result = await _patiently(lambda: mesh.connection.call(
                    "worker", "work", {"i": i}, call_id=call_id, timeout=60,
                    on_accepted=on_accepted), until=until)
                record(out, f"answered {call_id} {result['done']}")

        await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


async def role_publisher(home: Path, hub: str, out: Path, n: int, deadline: float) -> None:
    until = time.monotonic() + deadline
    async with connected(home, "publisher", hub) as mesh:
        for i in range(n):
            event_id = f"event-{i}"
            with contextlib.suppress(TimeoutError):
                await _patiently(lambda i=i, event_id=event_id: mesh.publish(  # type: ignore[misc]
                    "jobs.run", {"i": i}, event_id=event_id), until=until)
                record(out, f"accepted {event_id}")


async def role_incrementer(home: Path, hub: str, out: Path, n: int, deadline: float) -> None:
    from interlink import ConnectionLost, StaleRevision
    until = time.monotonic() + deadline
    async with connected(home, "counter", hub) as mesh:
        counters = mesh.memory("counters")
        done = 0
        while done < n and time.monotonic() < until:
            op = f"inc-{done}"
            try:
                entry = await counters.get("n")
                current, revision = (entry.value["n"], entry.revision) if entry else (0, 0)
                await counters.update("n", {"n": current + 1, "op": op}, expect=revision)
                record(out, f"applied {op}")
                done += 1
            except StaleRevision:
                continue
            except (TimeoutError, ConnectionLost, OSError):
                # the answer was lost: did the write take effect? read back, through the crash
                while time.monotonic() < until:
                    try:
                        entry = await counters.get("n")
                        break
                    except (TimeoutError, ConnectionLost, OSError):
                        await asyncio.sleep(0.2)
                else:
                    break
                if entry is not None and entry.value.get("op") == op:
                    record(out, f"applied {op}")
                    done += 1


ROLES = {"worker": role_worker, "consumer": role_consumer}
CLIENTS = {"caller": role_caller, "publisher": role_publisher,
           "incrementer": role_incrementer}


# -- the orchestrator -------------------------------------------------------------------------

def make_home(root: Path, store: str | None = None) -> None:
    from interlink.home import MeshHome
    home = MeshHome(root)
    home.init()
    for name, calls in {"caller": ["worker.work"], "worker": [], "publisher": [],
                        "consumer": [], "counter": []}.items():
        home.add_agent(name, calls=calls)
    home.grant("publisher", publish=["jobs.*"])
    home.grant("consumer", subscribe=["jobs.*"])
    home.grant("counter", memory={"counters": "read-write"})
    policy = home.load_policy()
    policy.hub.rate_per_agent = 100_000  # the loop measures durability, not the rate limits
    policy.hub.rate_burst = 100_000
    policy.hub.store = store
    home.save_policy(policy)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def tally(work: Path, n_calls: int, n_events: int, n_increments: int,
          counter: int | None) -> dict[str, Any]:
    caller, ran = lines(work / "caller.log"), lines(work / "worker.log")
    accepted_calls = {line.split()[1] for line in caller if line.startswith("accepted ")}
    answered = {line.split()[1] for line in caller if line.startswith("answered ")}
    runs: dict[str, int] = {}
    for call_id in ran:
        runs[call_id] = runs.get(call_id, 0) + 1
    published = {line.split()[1] for line in lines(work / "publisher.log")}
    handled: dict[str, int] = {}
    for event_id in lines(work / "consumer.log"):
        handled[event_id] = handled.get(event_id, 0) + 1
    applied = [line for line in lines(work / "incrementer.log") if line.startswith("applied ")]
    return {
        "calls": {"asked": n_calls, "acknowledged": len(accepted_calls),
                  "lost": len(accepted_calls - answered) + len(answered - set(runs)),
                  "duplicated": sum(1 for c in runs.values() if c > 1)},
        "events": {"asked": n_events, "acknowledged": len(published),
                   "lost": len(published - set(handled)),
                   "duplicated": sum(1 for c in handled.values() if c > 1)},
        "cas": {"asked": n_increments, "acknowledged": len(applied), "counter": counter,
                "lost": max(0, len(applied) - (counter or 0)),
                "duplicated": max(0, (counter or 0) - len(applied))},
    }


async def read_counter(home: Path, port: int) -> int | None:
    from interlink import connect
    async with connect("counter", credential=home / "agents" / "counter.cred",
                       hub=f"ws://127.0.0.1:{port}/ws") as mesh:
        entry = await mesh.memory("counters").get("n")
        return int(entry.value["n"]) if entry else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--increments", type=int, default=1000)
    parser.add_argument("--kill-every", type=float, default=2.0,
                        help="at most this many seconds between kills (at random)")
    parser.add_argument("--deadline", type=float, default=600.0,
                        help="seconds the clients may take in all")
    parser.add_argument("--work", type=Path, default=None, help="keep the run's files here")
    parser.add_argument("--store", default=None,
                        help="the hub's store (e.g. nats://127.0.0.1:4222?prefix=CRASH1); "
                             "default the embedded SQLite file")
    parser.add_argument("role", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:  # a child process: `crash.py ROLE HOME HUB OUT [N DEADLINE]`
        name, home, hub, out, *rest = args.role
        if name in ROLES:
            asyncio.run(ROLES[name](Path(home), hub, Path(out)))
        else:
            asyncio.run(CLIENTS[name](Path(home), hub, Path(out), int(rest[0]),
                                      float(rest[1])))
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="interlink-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"crash loop: seed {seed}, {args.kills} kills, {args.calls} calls, {args.events} "
          f"events, {args.increments} CAS increments; files in {work}", flush=True)
    home = work / "home"
    make_home(home, args.store)
    hub = HubProcess(home, log=work / "hub.log")
    hub.start()
    port, url = hub.port, hub.url
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[subprocess.Popen[bytes]] = []
    kills = 0

    def spawn(*role: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, str(HERE), *role], env=env(),
                                stdout=subprocess.DEVNULL,
                                stderr=(work / f"{role[0]}.err").open("ab"))
        procs.append(proc)
        return proc

    try:
        for name in ROLES:
            spawn(name, str(home), url, str(work / f"{name}.log"))
        clients = [spawn(name, str(home), url, str(work / f"{name}.log"), str(n),
                         str(args.deadline))
                   for name, n in (("caller", args.calls), ("publisher", args.events),
                                   ("incrementer", args.increments))]
        started = time.monotonic()
        kills = 0
        for kill in range(args.kills):
            time.sleep(rng.uniform(0.2, args.kill_every))
            if all(c.poll() is not None for c in clients):
                break
            hub.kill()
            kills += 1
            print(f"  kill {kill + 1} at {time.monotonic() - started:.1f}s", flush=True)
            time.sleep(rng.uniform(0.0, 0.5))
            hub.start()
        for client in clients:
            client.wait(args.deadline + 60)
        print(f"  clients done at {time.monotonic() - started:.1f}s", flush=True)
        # let the worker and consumer finish what is in flight (ack-wait redeliveries included)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = tally(work, args.calls, args.events, args.increments, None)
            if done["events"]["lost"] == 0:
                break
            time.sleep(0.5)
        counter = asyncio.run(read_counter(home, port))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        hub.stop()
    result = tally(work, args.calls, args.events, args.increments, counter)
    bad = False
    for kind, figures in result.items():
        print(f"  {kind:<7} " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
        bad = bad or figures["lost"] > 0 or figures["duplicated"] > 0
        if figures["acknowledged"] < figures["asked"]:
            print(f"  {kind}: only {figures['acknowledged']} of {figures['asked']} were "
                  "acknowledged before the deadline", flush=True)
            bad = True
    for client in clients:
        if client.returncode:
            print(f"  a client exited with status {client.returncode}: see the *.err files in "
                  f"{work}", flush=True)
            bad = True
    print(json.dumps({"seed": seed, "kills": kills, **result}))
    print("FAILED: acknowledged work was lost or done twice" if bad else
          "ok: nothing acknowledged was lost or done twice")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
