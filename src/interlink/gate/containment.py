"""Containment state the guard stage consults: circuit breakers per target, rate limits per
agent, budgets per conversation, and the count of policy violations that quarantines an agent.

Breaker per target agent: closed → open when, over the last `breaker_window` finished calls,
the failure rate (errors and timeouts) reaches `breaker_failure_rate` (with at least
`breaker_min_calls`); while open, calls to it are refused at once; after `breaker_open_seconds`
it lets one probe through (half-open): success closes it, failure opens it again.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

from ..policy import HubSettings


@dataclass
class Breaker:
    state: str = "closed"
    outcomes: deque[bool] = field(default_factory=deque)
    opened_at: float = 0.0
    probing: bool = False


class Ledger(Protocol):
    """Containment state that hubs sharing a store must agree on, kept in the store
    (`services.ledger`); without one, a hub alone keeps it in memory."""

    async def spend(self, conversation: str, messages: int, tokens: float
                    ) -> tuple[int, float]:
        """Add to the conversation's spending; what it has spent now, in all."""
        ...

    async def fix_workflow(self, conversation: str, workflow: str) -> str:
        """Fix the conversation's workflow ("" for none) unless some hub fixed it first;
        the one it follows."""
        ...


class Containment:
    def __init__(self, settings: HubSettings, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.settings = settings
        self.clock = clock
        self.breakers: dict[str, Breaker] = defaultdict(Breaker)
        self._buckets: dict[str, tuple[float, float]] = {}  # agent -> (tokens, last refill)
        self._spent: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # conv -> msgs, tokens
        self._violations: dict[str, deque[float]] = defaultdict(deque)
        self._workflows: dict[str, str] = {}  # conversation -> workflow name ("" for none)
        self.on_change: Callable[[str, str], None] | None = None
        self.ledger: Ledger | None = None
        """Where budgets and workflows are counted when hubs share a store."""

    # -- breakers ------------------------------------------------------------------------------

    def admit(self, target: str) -> str | None:
        """Why a call to `target` is refused now (its breaker is open), or None."""
        breaker = self.breakers.get(target)
        if breaker is None or breaker.state == "closed":
            return None
        if breaker.state == "open":
            if self.clock() - breaker.opened_at < self.settings.breaker_open_seconds:
                wait = self.settings.breaker_open_seconds - (self.clock() - breaker.opened_at)
                return (f"{target} is failing (circuit open after "
                        f"{self._failures(breaker)} failures in its last "
                        f"{len(breaker.outcomes)} calls); retry in {wait:.1f}s")
            self._set(target, breaker, "half-open")
        if breaker.probing:
            return f"{target} is being probed after failing; retry in a moment"
        breaker.probing = True
        return None

    def outcome(self, target: str, ok: bool) -> None:
        """A call to `target` finished (`ok`: answered without error)."""
        breaker = self.breakers[target]
        if breaker.state == "half-open":
            breaker.probing = False
            breaker.outcomes.clear()
            if ok:
                self._set(target, breaker, "closed")
            else:
                breaker.opened_at = self.clock()
                self._set(target, breaker, "open")
            return
        breaker.outcomes.append(ok)
        while len(breaker.outcomes) > self.settings.breaker_window:
            breaker.outcomes.popleft()
        calls = len(breaker.outcomes)
        if (breaker.state == "closed" and calls >= self.settings.breaker_min_calls
                and self._failures(breaker) / calls >= self.settings.breaker_failure_rate):
            breaker.opened_at = self.clock()
            self._set(target, breaker, "open")

    def breaker_state(self, target: str) -> str:
        breaker = self.breakers.get(target)
        return breaker.state if breaker else "closed"

    def _failures(self, breaker: Breaker) -> int:
        return sum(1 for ok in breaker.outcomes if not ok)

    def _set(self, target: str, breaker: Breaker, state: str) -> None:
        breaker.state = state
        if self.on_change is not None:
            self.on_change(target, state)

    # -- rates and budgets ---------------------------------------------------------------------

    def take(self, agent: str, *, control: bool = False, rate: float | None = None) -> bool:
        """One envelope from `agent` against its rate limit (a token bucket). Control traffic
        (acks, replies, progress, unsubscribes: settling work already admitted) has a budget of
        its own, so a busy agent's data never starves its acks."""
        if control:
            key, rate, burst = (f"{agent}\0control", self.settings.control_rate_per_agent,
                                self.settings.control_rate_burst)
        elif rate is not None:  # the agent's own limit from mesh.yaml
            key, burst = agent, max(1, int(rate))
        elif self.settings.rate_per_agent is not None:
            key, rate, burst = agent, self.settings.rate_per_agent, self.settings.rate_burst
        else:
            return True  # no cap set: the hub's capacity is the limit
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    async def spend(self, conversation: str, tokens: float = 0.0) -> str | None:
        """Count one message (and reported model tokens) against the conversation's budget;
        why it is over budget, or None."""
        if self.ledger is not None:
            messages, used = await self.ledger.spend(conversation, 1, tokens)
            spent: list[float] = [messages, used]
        else:
            if conversation not in self._spent and len(self._spent) > 100_000:
                self._spent.clear()  # bounded memory; long conversations start counting anew
            spent = self._spent[conversation]
            spent[0] += 1
            spent[1] += tokens
        if spent[0] > self.settings.conversation_max_messages:
            return (f"conversation {conversation} has used its budget of "
                    f"{self.settings.conversation_max_messages} messages")
        if spent[1] > self.settings.conversation_max_tokens:
            return (f"conversation {conversation} has used its budget of "
                    f"{self.settings.conversation_max_tokens:g} model tokens")
        return None

    # -- call graphs ---------------------------------------------------------------------------

    async def workflow(self, conversation: str, entry_call: str | None,
                       workflows: Mapping[str, object]) -> str | None:
        """The workflow a conversation follows: fixed by the call that started it (on
        whichever hub it came; a fixed workflow never changes, so this hub keeps a copy)."""
        known = self._workflows.get(conversation)
        if known is None and entry_call is not None:
            for name, flow in workflows.items():
                if fnmatchcase(entry_call, getattr(flow, "entry", "")):
                    known = name
                    break
            if self.ledger is not None:
                known = await self.ledger.fix_workflow(conversation, known or "")
            if len(self._workflows) > 100_000:
                self._workflows.clear()
            self._workflows[conversation] = known or ""
        return known or None

    # -- violations ----------------------------------------------------------------------------

    def violation(self, agent: str) -> bool:
        """Count a policy violation by `agent`; True when it should be quarantined."""
        now = self.clock()
        seen = self._violations[agent]
        seen.append(now)
        while seen and now - seen[0] > self.settings.quarantine_window_seconds:
            seen.popleft()
        return len(seen) >= self.settings.quarantine_after
