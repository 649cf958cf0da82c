"""The configuration reference (`docs/configuration.md`), made from the policy models
themselves — every mesh.yaml key, its type, its default and what it does — so it cannot drift
from the code. `interlink config-reference` prints it; a test checks the committed copy."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .policy import AgentGrants, Classification, Clearance, HubSettings, Policy, RemoteA2A, Workflow

SECTIONS: list[tuple[str, str, type[BaseModel]]] = [
    ("The file", "top level of `mesh.yaml`", Policy),
    ("`hub:`", "hub settings (all optional)", HubSettings),
    ("`agents.NAME:`", "one enrolled agent: its grants, clearance, labels and limits",
     AgentGrants),
    ("`agents.NAME.clearance:`", "what the agent may be given", Clearance),
    ("`agents.NAME.a2a:`", "a remote A2A agent enrolled by URL", RemoteA2A),
    ("`namespaces.PATTERN:` and `topics.PATTERN:`",
     "the most sensitive data a memory namespace or topic may hold", Classification),
    ("`workflows.NAME:`", "a permitted call graph", Workflow),
]


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("interlink.policy.", "")


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`" if value not in ({}, []) else "empty"


def configuration_reference() -> str:
    lines = ["# Configuration reference", "",
             "Every key of `mesh.yaml`, made from the code (`interlink config-reference`). "
             "The hub re-reads the file when it changes; the CLI edits it in place "
             "(`interlink agent grant/revoke/set`).", ""]
    for title, what, model in SECTIONS:
        lines += [f"## {title}", "", what[0].upper() + what[1:] + ".", "",
                  "| key | type | default | what it does |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            doc = " ".join((field.description or "").split()).replace("|", "\\|")
            kind = _type(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {_default(field)} | {doc} |")
        lines.append("")
    return "\n".join(lines)
