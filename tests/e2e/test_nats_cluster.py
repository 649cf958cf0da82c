"""A hub on a three-node NATS cluster with every stream replicated three times: the node the
hub is connected to is SIGKILLed during traffic. The hub moves to another node by itself;
what it refuses meanwhile is refused as retriable (`store_unavailable`), and with the same ids
retried, every call runs once and is answered, and every event is handled once."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, CallTimeout, GateDenied, SkillContext, connect

from ..helpers import HubProcess, interlink_cli, nats_cluster, wait_until
from .test_nats_engine import nats_home


async def patiently(attempt: Any) -> Any:
    """Retry what the hub refused as 'not now' (its store is electing a new leader)."""
    for _ in range(120):
        try:
            return await attempt()
        except GateDenied as exc:
            if exc.code != "store_unavailable":
                raise
        except CallTimeout:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError("the hub never came back")


@pytest.mark.timeout(240)
async def test_a_cluster_node_killed_during_traffic_loses_nothing(tmp_path: Path) -> None:
    nodes = nats_cluster(tmp_path / "nats")
    # the hub is given the first node only: it is the one killed (the others are discovered)
    home = nats_home(tmp_path / "home", nodes[0].url + "?replicas=3")
    runs: collections.Counter[int] = collections.Counter()
    handled: collections.Counter[int] = collections.Counter()
    hub = HubProcess(home)
    try:
        await wait_until(lambda: _ready(hub), timeout=60, interval=1.0)  # the cluster forms
        worker = Agent("worker", credential=home.credential_path("worker"), hub=hub.url)

        @worker.skill("echo")
        async def echo(ctx: SkillContext, req: Any) -> Any:
            runs[req["i"]] += 1
            return req

        @worker.on_event("news.*", durable="kept")
        async def news(ctx: Any, event: Any) -> None:
            handled[event.data["i"]] += 1

        await worker.start(wait=True)
        try:
            async with connect("alice", credential=home.credential_path("alice"),
                               hub=hub.url) as alice:
                answered: dict[int, Any] = {}
                for i in range(80):
                    if i == 25:
                        nodes[0].stop(kill=True)
                    call_id = f"call-{i:03d}-{tmp_path.name[-8:]}"
                    answered[i] = await patiently(lambda i=i, call_id=call_id: alice.call(
                        "worker", "echo", {"i": i}, timeout=20, call_id=call_id))
                    await patiently(lambda i=i: alice.publish("news.today", {"i": i},
                                                              event_id=f"event-{i}"))
            await wait_until(lambda: len(handled) >= 80, timeout=60, interval=0.2)
        finally:
            await worker.stop()
        hub.stop()
        policy = home.load_policy()  # the CLI reads the store through the nodes still up
        assert policy.hub.store is not None
        policy.hub.store = policy.hub.store.replace(
            nodes[0].url, nodes[1].url + "," + nodes[2].url.removeprefix("nats://"))
        home.save_policy(policy)
        verified: list[Any] = []

        def verify() -> bool:  # a cluster that just lost a node may answer late at first
            verified.append(interlink_cli(home)("audit", "verify"))
            return verified[-1].returncode == 0 or "did not answer" not in verified[-1].stderr
        await wait_until(verify, timeout=60, interval=1.0)
        assert verified[-1].returncode == 0, verified[-1].stdout + verified[-1].stderr
        assert "audit failed" not in hub.log.read_text()  # no decision went unrecorded
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.stop()
        for node in nodes:
            node.stop()
    assert all(answered[i] == {"i": i} for i in range(80))
    assert sorted(runs) == list(range(80)) and max(runs.values()) == 1
    assert sorted(handled) == list(range(80)) and max(handled.values()) == 1


async def _ready(hub: HubProcess) -> bool:
    """Start the hub once the cluster has a JetStream leader (its start fails until then)."""
    try:
        await hub.start(timeout=30)
        return True
    except RuntimeError:
        return False
