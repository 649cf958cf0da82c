"""Callers see what a reply carries (`call_with_labels`), and a skill can say what its answers
are: in its declaration (the agent's card) or in mesh.yaml (`output_labels`). Either only
raises the label; the hub joins both into the reply's effective label and checks the caller's
clearance against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from interlink import Agent, CallError, Reply, SkillContext, connect
from interlink.home import MeshHome
from interlink.policy import Clearance
from interlink.server import RunningHub, background_hub

from ..helpers import make_home

PHI = {"level": "confidential", "tags": ["phi"]}


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[MeshHome, RunningHub]]:
    home = make_home(tmp_path / "home", {"records": [], "nurse": ["records.*", "front.ask"],
                                         "desk": ["records.*"], "front": ["records.*"]})
    policy = home.load_policy()
    policy.agents["nurse"].clearance = Clearance(level="confidential", tags=["phi", "finance"])
    policy.agents["front"].clearance = Clearance(level="confidential", tags=["phi"])
    # records holds phi and finance data, so it may be sent what carries them
    policy.agents["records"].clearance = Clearance(level="confidential",
                                                   tags=["phi", "finance"])
    policy.agents["records"].output_labels = {"bill*": {"level": "confidential",
                                                        "tags": ["finance"]}}
    home.save_policy(policy)
    async with background_hub(home) as running:
        records = Agent("records", credential=home.credential_path("records"), hub=running.url)

        @records.skill("patient_records", output_label=PHI)
        async def patient_records(ctx: SkillContext, req: Any) -> dict[str, Any]:
            return {"diagnosis": "hypertension"}  # read from its own database, not the mesh

        @records.skill("availability")
        async def availability(ctx: SkillContext, req: Any) -> list[str]:
            return ["10:00", "11:30"]

        @records.skill("billing")
        async def billing(ctx: SkillContext, req: Any) -> dict[str, int]:
            return {"owed": 120}

        front = Agent("front", credential=home.credential_path("front"), hub=running.url)

        @front.skill("ask")
        async def ask(ctx: SkillContext, req: Any) -> dict[str, Any]:
            reply = await ctx.call_with_labels("records", "patient_records", {})
            return {"seen": reply.labels}

        async with records, front:
            yield home, running


def client(home: MeshHome, running: RunningHub, name: str) -> Any:
    return connect(name, credential=home.credential_path(name), hub=running.url)


async def test_a_reply_shows_its_effective_label(mesh: tuple[MeshHome, RunningHub]) -> None:
    home, running = mesh
    async with client(home, running, "nurse") as nurse:
        free = await nurse.call_with_labels("records", "availability", {})
        assert isinstance(free, Reply) and free.value == ["10:00", "11:30"]
        assert free.labels["level"] == "public" and free.labels["tags"] == []
        seen = await nurse.call("front", "ask", {})  # a skill sees labels of what it calls
        assert seen["seen"]["tags"] == ["phi"]
        reply = await nurse.call_with_labels("records", "patient_records", {})
        assert reply.value == {"diagnosis": "hypertension"}
        assert reply.labels["level"] == "confidential" and reply.labels["tags"] == ["phi"]
        assert "agent:records" in reply.labels["provenance"]
        # the nurse's next request carries the phi it read, so records is tainted by it too
        bill = await nurse.call_with_labels("records", "billing", {})
        assert "finance" in bill.labels["tags"]  # from mesh.yaml output_labels
        # call() keeps returning the plain value
        assert await nurse.call("records", "availability", {}) == ["10:00", "11:30"]


async def test_declared_output_labels_are_enforced(mesh: tuple[MeshHome, RunningHub]) -> None:
    """desk (internal clearance) may call records, but not be given its phi or finance answers;
    the availability of the same agent still flows."""
    home, running = mesh
    async with client(home, running, "desk") as desk:
        assert await desk.call("records", "availability", {}) == ["10:00", "11:30"]
        for skill, tag in (("patient_records", "phi"), ("billing", "finance")):
            with pytest.raises(CallError) as withheld:
                await desk.call("records", skill, {})
            assert withheld.value.code == "not_cleared"
            assert tag in withheld.value.reason or "confidential" in withheld.value.reason
