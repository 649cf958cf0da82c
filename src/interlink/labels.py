"""Security labels: what a piece of data is, where it came from, and who may see it.

Every envelope and memory entry carries a label:

* **confidentiality**: an ordered level (`public < internal < confidential < restricted`) plus
  tags (`phi`, `finance`, …) — who may see it;
* **integrity**: `trusted` or `untrusted` — whether it may drive a sensitive action;
* **provenance**: the set of sources it came from (agents, and outside origins such as `web`,
  `email`, `user`, `a2a:<url>`).

Labels only ever go up as data flows: the **join** of two labels is the higher level, the union
of tags and sources, and `untrusted` if either is. A sender may raise the label of what it
sends, never lower it; the hub adds the taint of everything the sender has been given in the
conversation (see `gate/label.py`).

    Label.parse({"level": "confidential", "tags": ["phi"], "integrity": "untrusted",
                 "provenance": ["web"]})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InterlinkError

LEVELS = ("public", "internal", "confidential", "restricted")
INTEGRITY = ("trusted", "untrusted")


class LabelError(InterlinkError, ValueError):
    """A label that cannot be read."""


@dataclass(frozen=True)
class Label:
    level: str = "public"
    tags: frozenset[str] = field(default_factory=frozenset)
    integrity: str = "trusted"
    provenance: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, raw: Any) -> Label:
        """A label from its JSON form (an envelope's `labels`); LabelError saying why not."""
        if raw is None or raw == {}:
            return BOTTOM
        if not isinstance(raw, dict):
            raise LabelError("labels must be an object: {level, tags, integrity, provenance}")
        unknown = set(raw) - {"level", "tags", "integrity", "provenance"}
        if unknown:
            raise LabelError(f"unknown label fields {sorted(unknown)}; labels have level, tags, "
                             "integrity and provenance")
        level = raw.get("level", "public")
        if level not in LEVELS:
            raise LabelError(f"label level {level!r} is not one of {', '.join(LEVELS)}")
        integrity = raw.get("integrity", "trusted")
        if integrity not in INTEGRITY:
            raise LabelError(f"label integrity {integrity!r} is not trusted or untrusted")
        return cls(level, _strings(raw.get("tags"), "tags"), integrity,
                   _strings(raw.get("provenance"), "provenance"))

    def join(self, other: Label) -> Label:
        """The least label at least as restrictive as both (provenance bounded: see
        `_bounded`)."""
        return Label(max(self.level, other.level, key=LEVELS.index), self.tags | other.tags,
                     "untrusted" if "untrusted" in (self.integrity, other.integrity)
                     else "trusted", _bounded(self.provenance | other.provenance))

    def at_most(self, other: Label) -> bool:
        """Whether this label is no more restrictive than `other` (other ⊒ self)."""
        return self.join(other) == other

    def covered_by(self, level: str, tags: Iterable[str]) -> str | None:
        """Why a clearance of `level` and `tags` may not see data with this label, or None."""
        if LEVELS.index(self.level) > LEVELS.index(level):
            return f"the data is {self.level}, above the {level} allowed"
        missing = sorted(self.tags - set(tags))
        if missing:
            return f"the data is tagged {', '.join(missing)}, which is not allowed here"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "tags": sorted(self.tags), "integrity": self.integrity,
                "provenance": sorted(self.provenance)}

    def describe(self) -> str:
        tags = f"+{'+'.join(sorted(self.tags))}" if self.tags else ""
        sources = f" from {', '.join(sorted(self.provenance))}" if self.provenance else ""
        return f"{self.level}{tags}, {self.integrity}{sources}"


BOTTOM = Label()

MAX_PROVENANCE = 64
MANY_AGENTS = "agent:+more"
"""Stands for the mesh agents dropped from a provenance that grew past MAX_PROVENANCE."""


def _bounded(provenance: frozenset[str]) -> frozenset[str]:
    """At most MAX_PROVENANCE sources. Outside origins (`web`, `a2a:…`) are what flow rules
    and people need most, so mesh agents (`agent:…`) give way first, folded into one
    `agent:+more`; the level, tags and integrity, which decide, are never dropped."""
    if len(provenance) <= MAX_PROVENANCE:
        return provenance
    outside = sorted(p for p in provenance if not p.startswith("agent:"))
    agents = sorted(p for p in provenance if p.startswith("agent:") and p != MANY_AGENTS)
    room = MAX_PROVENANCE - 1
    kept = outside[:room] + agents[:max(0, room - len(outside))]
    return frozenset([*kept, MANY_AGENTS])


def join_all(labels: Iterable[Label]) -> Label:
    result = BOTTOM
    for label in labels:
        result = result.join(label)
    return result


def _strings(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 200
                                              for v in value) or len(value) > 64:
        raise LabelError(f"label {name} must be a list of up to 64 short strings")
    return frozenset(value)
