"""Least privilege, default deny: what each agent may do, read from `mesh.yaml`.

    hub:                          # hub settings (all optional)
      host: 127.0.0.1
      port: 7750
    agents:
      drafter:
        description: writes drafts
        calls: [editor.review]    # agent.skill patterns; * matches within a name
        publish: [blog.drafts.*]  # topics (NATS wildcards: * one token, > the rest)
        subscribe: [blog.>]       # patterns it may subscribe to (each must be covered)
        memory:                   # shared-memory namespaces (patterns allowed): read or
          blog: read-write        #   read-write
          "team-*": read
      editor: {}                  # enrolled, may do nothing

Rights come only from the verified identity of the sender and its grants here; nothing an
envelope says about itself (a claimed role in its text, say) changes a decision. Every decision
names the rule that made it, so a refusal can say which line to change.

The policy file is re-read when it changes (checked at most every `RELOAD_CHECK_SECONDS`); a
file that fails to parse is reported and the last good policy stays in force.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .envelope import AGENT_NAME
from .errors import ConfigError
from .labels import Label, LabelError
from .names import covers, matches, pattern_error

log = logging.getLogger("interlink.policy")

RELOAD_CHECK_SECONDS = 0.25
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
DEFAULT_PORT = 7750


class TlsSettings(BaseModel):
    """The hub's certificate: with it, the hub serves wss:// and https:// only."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    cert: str
    """The hub's certificate chain (PEM); a path relative to the home, or absolute."""
    key: str
    """Its private key (PEM)."""
    ca: str | None = None
    """The CA that signed it, which agents and the CLI of this home trust (a private CA, as
    `interlink init --tls` makes); unset: the system's trust store."""


class HubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address the hub binds (loopback by default)."""
    tls: TlsSettings | None = None
    """Serve wss:// and https:// with this certificate (`interlink init --tls` makes a private
    CA and one). Without it the hub speaks plaintext, and says so loudly when it listens on
    anything but loopback."""
    store: str | None = None
    """Where the hub keeps everything: `nats://HOST:PORT[,HOST:PORT…]` (JetStream; `tls://…`
    for TLS; options such as `?replicas=3&prefix=IL`) or `sqlite:///PATH`. Unset: the embedded
    SQLite file in the home's data/ folder. `interlink serve --store URL` overrides it."""
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """Port of the WebSocket and HTTP edges."""
    max_envelope_bytes: int = Field(default=1024 * 1024, ge=1024)
    """The largest envelope accepted; larger ones are refused at decode."""
    clock_skew_seconds: float = Field(default=30.0, gt=0)
    """How far an envelope's signing time may be from the hub's clock (replay window)."""
    call_timeout_seconds: float = Field(default=30.0, gt=0)
    """A call's deadline when the caller gives none."""
    max_call_timeout_seconds: float = Field(default=3600.0, gt=0)
    """The longest deadline a caller may ask for."""
    call_max_deliver: int = Field(default=5, ge=1)
    """Deliveries of one call before it is dead-lettered."""
    keep_results_seconds: float = Field(default=3600.0, gt=0)
    """How long a finished call's result is kept, so a retry with the same id gets it."""
    min_call_timeout_seconds: float = Field(default=0.2, gt=0)
    """Shorter deadlines are refused (they would only count as the target's failures)."""
    max_open_calls: int = Field(default=512, ge=1)
    """Unfinished calls one agent may have made at once."""
    max_hops: int = Field(default=16, ge=1)
    """Longest causal chain of calls (a loop between agents stops here)."""
    conversation_max_messages: int = Field(default=2000, ge=1)
    """Messages one conversation may carry (a runaway loop stops here)."""
    conversation_max_tokens: float = Field(default=1_000_000, gt=0)
    """Model tokens agents report in replies (`usage.tokens`), per conversation."""
    rate_per_agent: float | None = Field(default=None, gt=0)
    """Envelopes per second an agent may send (unless it has its own `rate`). Unset (the
    default): no per-agent cap beyond what the hub can carry — one agent may use the whole hub.
    Set it, or an agent's own `rate`, to keep agents from crowding each other out."""
    rate_burst: int = Field(default=1000, ge=1)
    """How many envelopes above the rate an agent may send at once."""
    control_rate_per_agent: float = Field(default=5000.0, gt=0)
    """Acks, replies, progress and unsubscribes per second: a budget apart from the data rate,
    so settling admitted work is never starved by it."""
    control_rate_burst: int = Field(default=10000, ge=1)
    """Burst of the control budget."""
    breaker_window: int = Field(default=20, ge=1)
    """Calls per target the circuit breaker looks back over."""
    breaker_min_calls: int = Field(default=5, ge=1)
    """Calls in the window before the breaker may open."""
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Share of failed calls that opens the breaker."""
    breaker_open_seconds: float = Field(default=5.0, gt=0)
    """How long an open breaker refuses before one probe is let through."""
    quarantine_after: int = Field(default=20, ge=1)
    """Policy violations (refusals at authorize or label) that quarantine an agent..."""
    quarantine_window_seconds: float = Field(default=60.0, gt=0)
    """...within this many seconds."""
    taint_ttl_seconds: float = Field(default=86400.0, gt=0)
    """How long the hub remembers what an agent with `taint_scope: conversation` was given in
    one conversation."""
    taint_expiry_seconds: float | None = Field(default=None, gt=0)
    """An agent's own (sticky) taint is forgotten this long after it last grew; unset (the
    default), it stays until an operator clears it (`interlink agent clear-taint`) or an
    endorse / declassify lowers it."""
    audit_seal_seconds: float = Field(default=1.0, gt=0)
    """How often the hub seals new audit records with a signed checkpoint (and the signed head
    file): at most this much of the chain is unsealed when a hub is killed."""
    tracing: bool = True
    """An OpenTelemetry span for every envelope the gate decides, kept in the hub's trace
    store (`interlink trace`, `interlink tail`) and sent to `otlp_endpoint` when set."""
    trace_retention_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    """How long the hub's trace store keeps spans."""
    otlp_endpoint: str | None = None
    """An OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces) the hub also sends
    its spans to, in batches; unset, they stay in the hub's own trace store."""
    max_depth: int = Field(default=32, ge=1)
    """Deepest nesting of JSON in a call's input or output."""
    max_event_bytes: int = Field(default=256 * 1024, ge=256)
    """The largest event payload (its JSON data) a publish may carry."""
    event_dedup_seconds: float = Field(default=120.0, gt=0)
    """A publish retried with the same id within this window is not a second event."""
    event_retention_seconds: float | None = Field(default=None, gt=0)
    """Events older than this are removed from the log (never sooner than the dedup window);
    unset keeps every event. A durable consumer further behind skips what was removed."""
    event_ack_wait_seconds: float = Field(default=30.0, gt=0)
    """Durable consumers: an event not acked within this is redelivered."""
    event_max_deliver: int = Field(default=5, ge=1)
    """Durable consumers: deliveries before an event goes to `$dead.<consumer>`."""
    event_max_inflight: int = Field(default=256, ge=1)
    """Events delivered to one subscriber and not yet acknowledged, at most."""
    max_memory_value_bytes: int = Field(default=64 * 1024, ge=64)
    """The largest shared-memory value (its JSON form)."""
    memory_history: int = Field(default=256, ge=1)
    """Revisions kept per memory key (history, and how far a watch can resume)."""
    a2a_anonymous_caller: dict[str, str] = Field(default_factory=dict)
    """Opt-in, empty by default (every A2A request needs a bearer token): served agent → the
    enrolled agent that an A2A request to `/a2a/{agent}` *without* an `Authorization` header
    acts as, e.g. `{tck: tck-client}`. Only for clients that cannot send a token, such as a
    conformance kit: anyone who reaches the hub then calls that agent with the grants of the
    named caller. A request with a bad token is still refused."""

    @field_validator("a2a_anonymous_caller")
    @classmethod
    def _anonymous_names(cls, value: dict[str, str]) -> dict[str, str]:
        for served, caller in value.items():
            for name in (served, caller):
                if not AGENT_NAME.fullmatch(name):
                    raise ValueError(f"{name!r} in a2a_anonymous_caller is not an agent name")
        return value


class RemoteA2A(BaseModel):
    """A remote A2A agent enrolled in the mesh (`interlink agent add NAME --a2a URL`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    url: str
    """Its base URL; the card is read from `{url}/.well-known/agent-card.json`."""
    card_key: str | None = None
    """PEM public key its card must be signed with (then an unsigned or badly signed card is
    refused); without it, a signed card is accepted unverified and the audit says so."""
    token_env: str | None = None
    """Name of an environment variable of the hub holding a bearer token for calling it."""

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"an A2A agent's URL is http(s)://…, not {value!r}")
        return value.rstrip("/")


class Clearance(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    level: Literal["public", "internal", "confidential", "restricted"] = "internal"
    """The highest level it may be given."""
    tags: list[str] = Field(default_factory=list)
    """The tags it is cleared for (`phi`, `finance`, ...)."""


class Classification(BaseModel):
    """The most sensitive data a memory namespace or topic may hold."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    level: Literal["public", "internal", "confidential", "restricted"] = "internal"
    """The highest level it may hold."""
    tags: list[str] = Field(default_factory=list)
    """The tags it may hold."""


class Workflow(BaseModel):
    """A permitted call graph: a conversation started by a call to `entry` may only make the
    calls listed in `edges` (`caller->agent.skill`, patterns allowed)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    entry: str
    """The `agent.skill` pattern whose call starts such a conversation."""
    edges: list[str] = Field(default_factory=list)
    """Permitted calls, `caller->agent.skill` (patterns allowed)."""

    def allows(self, caller: str, target: str) -> int | None:
        for index, edge in enumerate(self.edges):
            who, _, what = edge.partition("->")
            if fnmatchcase(caller, who.strip()) and fnmatchcase(target, what.strip()):
                return index
        return None


class AgentGrants(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    description: str = ""
    """What the agent does (shown by `interlink agents`)."""
    calls: list[str] = Field(default_factory=list)
    """`agent.skill` patterns it may call (`editor.review`, `editor.*`, `*.review`)."""
    publish: list[str] = Field(default_factory=list)
    """Topic patterns it may publish to (and register schemas for)."""
    subscribe: list[str] = Field(default_factory=list)
    """Topic patterns it may subscribe to (each subscription must be covered)."""
    memory: dict[str, Literal["read", "read-write"]] = Field(default_factory=dict)
    """Namespace pattern (`*` within a name) → `read` or `read-write`."""
    a2a: RemoteA2A | None = None
    """Set for an agent that lives elsewhere and speaks A2A: the hub calls it for the mesh."""
    clearance: Clearance = Field(default_factory=lambda: Clearance())
    """What this agent may be given: the highest level, and the tags it is cleared for."""
    label: dict[str, Any] = Field(default_factory=dict)
    """A floor for everything this agent sends (e.g. an agent that reads the web:
    `{integrity: untrusted, provenance: [web]}`)."""
    sensitive: list[str] = Field(default_factory=list)
    """This agent's skills (patterns) that refuse untrusted input."""
    suspended: bool = False
    """Quarantined: its traffic is refused and nothing is delivered to it until an operator
    restores it."""
    rate: float | None = Field(default=None, gt=0)
    """Envelopes per second this agent may send (burst: one second's worth); unset, the hub's
    `rate_per_agent` (itself unset by default: no cap). A low one keeps a noisy agent from
    crowding out the others."""
    taint_scope: Literal["agent", "conversation"] = "agent"
    """Whose context taint this agent's output carries. `agent` (the default, and the only safe
    choice for an agent that may remember): everything it was ever given, in any conversation,
    until an operator clears it. `conversation`: only what it was given in the same
    conversation; the operator states here that this agent's runtime starts every conversation
    from a clean context (nothing read in one can reach another)."""
    output_labels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Skill pattern → a label that the skill's replies carry at least (e.g. `patient_records:
    {level: confidential, tags: [phi]}`), whatever the agent's context."""
    endorse: list[str] = Field(default_factory=list)
    """Agents (patterns) whose conversation context this agent may vouch for (untrusted →
    trusted); an explicit, audited `endorse`."""
    declassify: list[str] = Field(default_factory=list)
    """Agents (patterns) whose conversation context this agent may declassify."""
    approve: list[str] = Field(default_factory=list)
    """Agents (patterns) whose held calls this agent may approve or refuse."""
    needs_approval: list[str] = Field(default_factory=list)
    """This agent's skills (patterns) that, given untrusted input, wait for an approver instead
    of refusing it."""

    @field_validator("output_labels")
    @classmethod
    def _labels(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for pattern, raw in value.items():
            try:
                Label.parse(raw)
            except LabelError as exc:
                raise ValueError(f"output_labels[{pattern!r}]: {exc}") from None
        return value

    @field_validator("publish", "subscribe")
    @classmethod
    def _topic_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            problem = pattern_error(pattern)
            if problem:
                raise ValueError(f"{problem} (grants are topic patterns: blog.drafts.created, "
                                 "blog.*.created, blog.>)")
        return value

    @field_validator("calls")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not isinstance(pattern, str) or "." not in pattern:
                raise ValueError(f"call grant {pattern!r} must look like agent.skill "
                                 "(patterns allowed: editor.*, *.review)")
        return value


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    hub: HubSettings = Field(default_factory=HubSettings)
    """Hub settings."""
    agents: dict[str, AgentGrants] = Field(default_factory=dict)
    """Every enrolled agent, by name."""
    namespaces: dict[str, Classification] = Field(default_factory=dict)
    """Memory namespace pattern → the most sensitive data it may hold (default: internal)."""
    workflows: dict[str, Workflow] = Field(default_factory=dict)
    """Permitted call graphs, by name; a conversation follows the one whose entry started it."""
    topics: dict[str, Classification] = Field(default_factory=dict)
    """Topic pattern (NATS wildcards) → the most sensitive data it may carry (default:
    internal)."""
    revoked: list[str] = Field(default_factory=list)
    """Refused before they expire (`interlink revoke`): credential ids (`cred-…`, the hash of
    the agent's public key), bearer-token ids (`tok-…`, the token's `jti`) and delegation
    revocation ids (hex). Every change is a `policy` audit record."""

    def is_revoked(self, *ids: str) -> str | None:
        """The first of `ids` that is revoked, or None."""
        if not self.revoked:
            return None
        revoked = set(self.revoked)
        return next((i for i in ids if i in revoked), None)

    @field_validator("agents", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return {} if value is None else value

    @field_validator("agents")
    @classmethod
    def _names(cls, value: dict[str, AgentGrants]) -> dict[str, AgentGrants]:
        for name in value:
            if not AGENT_NAME.fullmatch(name):
                raise ValueError(f"agent name {name!r} must be lower-case letters, digits, _ or -"
                                 ", starting with a letter")
        return value

    def enrolled(self, agent: str) -> bool:
        return agent in self.agents

    def may_act_for(self, agent: str, right: str, subject: str) -> Decision:
        """May `agent` endorse / declassify / approve (`right`) for `subject`?"""
        grants = self.agents.get(agent)
        for index, pattern in enumerate(getattr(grants, right) if grants else []):
            if fnmatchcase(subject, pattern):
                return Decision(True, f"agents.{agent}.{right}[{index}]: {pattern}")
        return Decision(False, f"default deny: no entry in agents.{agent}.{right} matches "
                               f"{subject}")

    def holds_for_approval(self, agent: str, skill: str) -> str | None:
        grants = self.agents.get(agent)
        for index, pattern in enumerate(grants.needs_approval if grants else []):
            if fnmatchcase(skill, pattern):
                return f"agents.{agent}.needs_approval[{index}]: {pattern}"
        return None

    def output_label(self, agent: str, skill: str) -> tuple[dict[str, Any], str] | None:
        """The label `agent.skill`'s replies carry at least, and its rule, if one is set."""
        grants = self.agents.get(agent)
        for pattern, raw in (grants.output_labels.items() if grants else ()):
            if fnmatchcase(skill, pattern):
                return raw, f"agents.{agent}.output_labels[{pattern!r}]"
        return None

    def is_sensitive(self, agent: str, skill: str) -> str | None:
        """The rule marking `agent.skill` sensitive, or None."""
        grants = self.agents.get(agent)
        for index, pattern in enumerate(grants.sensitive if grants else []):
            if fnmatchcase(skill, pattern):
                return f"agents.{agent}.sensitive[{index}]: {pattern}"
        return None

    def namespace_class(self, namespace: str) -> tuple[Classification, str]:
        for pattern, klass in self.namespaces.items():
            if fnmatchcase(namespace, pattern):
                return klass, f"namespaces[{pattern!r}]: {klass.level}"
        return Classification(), "namespaces: default internal"

    def topic_class(self, topic: str) -> tuple[Classification, str]:
        for pattern, klass in self.topics.items():
            if matches(pattern, topic):
                return klass, f"topics[{pattern!r}]: {klass.level}"
        return Classification(), "topics: default internal"

    def may_call(self, agent: str, target: str, skill: str) -> Decision:
        grants = self.agents.get(agent)
        wanted = f"{target}.{skill}"
        if grants is None:
            return Decision(False, f"agents.{agent}: not in mesh.yaml (not enrolled)")
        for index, pattern in enumerate(grants.calls):
            if fnmatchcase(wanted, pattern):
                return Decision(True, f"agents.{agent}.calls[{index}]: {pattern}")
        return Decision(False, f"default deny: no entry in agents.{agent}.calls matches {wanted}")

    def may_use_memory(self, agent: str, namespace: str, *, write: bool) -> Decision:
        grants = self.agents.get(agent)
        if grants is None:
            return Decision(False, f"agents.{agent}: not in mesh.yaml (not enrolled)")
        readable = None
        for pattern, access in grants.memory.items():
            if fnmatchcase(namespace, pattern):
                rule = f"agents.{agent}.memory[{pattern!r}]: {access}"
                if access == "read-write" or not write:
                    return Decision(True, rule)
                readable = rule
        if readable is not None:
            return Decision(False, f"{readable} (read only)")
        return Decision(False, f"default deny: no entry in agents.{agent}.memory matches "
                               f"namespace {namespace!r}")

    def may_publish(self, agent: str, topic: str) -> Decision:
        return self._topic_grant(agent, "publish", topic, matches)

    def may_subscribe(self, agent: str, pattern: str) -> Decision:
        return self._topic_grant(agent, "subscribe", pattern, covers)

    def _topic_grant(self, agent: str, right: str, wanted: str, test: Any) -> Decision:
        grants = self.agents.get(agent)
        if grants is None:
            return Decision(False, f"agents.{agent}: not in mesh.yaml (not enrolled)")
        for index, pattern in enumerate(getattr(grants, right)):
            if test(pattern, wanted):
                return Decision(True, f"agents.{agent}.{right}[{index}]: {pattern}")
        return Decision(False, f"default deny: no entry in agents.{agent}.{right} "
                               f"{'matches' if right == 'publish' else 'covers'} {wanted}")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str


def parse_policy(text: str, source: str = "mesh.yaml") -> Policy:
    try:
        data = yaml.load(text, Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with `hub:` and `agents:`")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is not a valid Interlink policy:\n{exc}") from exc


def dump_policy(policy: Policy) -> str:
    """mesh.yaml for `policy`: only what differs from the defaults (and the hub's address)."""
    data = policy.model_dump(mode="json", exclude_defaults=True)
    data["hub"] = {"host": policy.hub.host, "port": policy.hub.port, **data.get("hub", {})}
    data.setdefault("agents", {})
    header = ("# Interlink mesh policy: default deny. "
              "Each agent may do only what is granted here.\n"
              "# calls: agent.skill patterns (editor.review, editor.*, *.review).\n"
              "# publish / subscribe: topic patterns (blog.drafts.created, blog.*, blog.>).\n"
              "# memory: namespace pattern -> read | read-write.\n"
              "# The hub re-reads this file when it changes; no restart needed.\n")
    return header + yaml.dump(data, Dumper=_DUMPER, sort_keys=False)


class PolicyFile:
    """The policy in force, re-read from disk when the file changes."""

    def __init__(self, path: Path, *, clock: Any = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._mtime = self._stat()
        text = path.read_text()
        self.policy = parse_policy(text, str(path))
        self.digest = _digest(text)
        """SHA-256 of the mesh.yaml text in force."""
        self._checked = clock()
        self.last_error: str | None = None
        self.reloads = 0
        self.listeners: list[Callable[[Policy, Policy], None]] = []
        """Called (old, new) after each reload that changed the policy in force."""

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> Policy:
        """The policy in force, after re-reading the file if it changed."""
        now = self._clock()
        if now - self._checked >= RELOAD_CHECK_SECONDS:
            self._checked = now
            self.reload_if_changed()
        return self.policy

    def reload_if_changed(self) -> bool:
        stamp = self._stat()
        if stamp == self._mtime:
            return False
        self._mtime = stamp
        try:
            text = self.path.read_text()
            new = parse_policy(text, str(self.path))
        except (ConfigError, OSError) as exc:
            self.last_error = str(exc)
            log.error("policy not reloaded; the last good policy stays in force: %s", exc)
            return False
        old, self.policy, self.digest = self.policy, new, _digest(text)
        self.last_error = None
        self.reloads += 1
        log.info("policy reloaded from %s", self.path)
        for listener in self.listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("a policy listener failed")
        return True


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def policy_changes(old: Policy, new: Policy) -> dict[str, Any]:
    """What changed between two policies, for the audit: agents added and removed, and per
    agent the settings that differ (old → new); hub settings, namespaces, topics, workflows."""
    changes: dict[str, Any] = {}
    added = sorted(set(new.agents) - set(old.agents))
    removed = sorted(set(old.agents) - set(new.agents))
    if added:
        changes["agents_added"] = added
    if removed:
        changes["agents_removed"] = removed
    for name in sorted(set(old.agents) & set(new.agents)):
        before = old.agents[name].model_dump(mode="json")
        after = new.agents[name].model_dump(mode="json")
        diff = {k: {"from": before[k], "to": after[k]} for k in after if before.get(k) != after[k]}
        if diff:
            changes.setdefault("agents", {})[name] = diff
    for part in ("hub", "namespaces", "topics", "workflows"):
        before = getattr(old, part)
        after = getattr(new, part)
        dump = (lambda v: v.model_dump(mode="json")) if part == "hub" else (
            lambda v: {k: x.model_dump(mode="json") for k, x in v.items()})
        if dump(before) != dump(after):
            changes[part] = {"from": dump(before), "to": dump(after)}
    return changes


# -- receiving ----------------------------------------------------------------------------

class Refused(NamedTuple):
    """Why an agent may not be given something, and the rule that says so."""

    code: str
    reason: str
    rule: str


def may_receive(policy: Policy, agent: str, label: Label) -> Refused | None:
    """Why `agent` may not be given data labelled `label` (not enrolled, suspended, or not
    cleared), or None. Every delivery asks this: calls, replies, events, memory reads and
    watch pushes."""
    grants = policy.agents.get(agent)
    if grants is None:
        return Refused("not_enrolled", f"{agent} is not enrolled", f"agents.{agent}: absent")
    if grants.suspended:
        return Refused("suspended", f"{agent} is suspended: nothing is delivered to it until "
                       f"`interlink agent restore {agent}`", f"agents.{agent}.suspended: true")
    problem = label.covered_by(grants.clearance.level, grants.clearance.tags)
    if problem:
        return Refused("not_cleared", f"{agent} is not cleared for this data: {problem}",
                       f"agents.{agent}.clearance: {grants.clearance.level}"
                       + (f" +{'+'.join(grants.clearance.tags)}" if grants.clearance.tags
                          else ""))
    return None
