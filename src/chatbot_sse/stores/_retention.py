"""How long a reply's events are kept: what every `ReplyLog` backend shares.

A reply's events (and its control state: cancel flag, reader heartbeat) are
kept while it is unfinished and for `event_retention` seconds after the call
that finished it. A reply that never finishes (its worker was killed mid-reply)
would otherwise be kept forever, so an unfinished reply not appended to for
`ABANDONED_AFTER` seconds counts as abandoned and goes too. Generation appends
every few tens of milliseconds while it produces anything, so only a dead
generator is silent that long.

Appends are idempotent per seq: events whose seq is not above the last one kept
are skipped, and nothing is added once the reply is finished. A writer may
therefore retry a batch whose outcome it does not know (a timeout, a lost
connection) without duplicating events.
"""

from __future__ import annotations

__all__ = ["ABANDONED_AFTER", "PRUNE_EVERY", "check_retention"]

ABANDONED_AFTER = 3600.0
"""Seconds after its last append that an unfinished reply is dropped."""

PRUNE_EVERY = 64
"""Backends that sweep expired replies themselves do it every this many appends."""


def check_retention(event_retention: float, conversation_ttl: float = 0.0) -> None:
    """ValueError unless `event_retention` > 0 and `conversation_ttl` >= 0 (0: no TTL)."""
    if not event_retention > 0:
        raise ValueError(f"event_retention must be > 0 seconds, not {event_retention!r}")
    if not conversation_ttl >= 0:
        raise ValueError(f"conversation_ttl must be >= 0 seconds, not {conversation_ttl!r}")
