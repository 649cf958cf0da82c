"""One agent's connection to its hub: handshake, signed envelopes, calls, events, memory,
reconnection — three jobs in three modules, one object:

    _wire.py     the socket, the handshake, reconnecting, envelopes and the gate's verdicts
    _calls.py    calls made and served (progress, replies, retries with the same id)
    _streams.py  publishing, subscriptions and memory watches (resumed without a gap)

The connection signs every envelope with the agent's key, waits for the gate's verdict on each,
verifies the origin signature of everything delivered to it, and survives a dropped connection
or a restarted hub: it reconnects with backoff, says hello again, and re-sends what was not yet
answered (calls keep their ids, so the hub attaches the retry to the original call and never
runs it twice).
"""

from __future__ import annotations

from ._calls import RESULT_GRACE, Calls, ProgressHandler, Reply
from ._streams import LIVE_BACKLOG, Streams
from ._wire import REPLACED, CallHandler, hub_urls

__all__ = ["LIVE_BACKLOG", "REPLACED", "RESULT_GRACE", "CallHandler", "Connection",
           "ProgressHandler", "Reply", "hub_urls"]


class Connection(Calls, Streams):
    """The transport under `Agent` and `connect()`: the wire, with calls and streams on it.
    States: new → open → closed."""
