"""The SSE wire format in one place: events and keep-alive pings as bytes.

This is the per-event hot path, so it builds frames by concatenating bytes and
serialises `data` with orjson in one call; nothing here validates. orjson never
emits a raw newline (control characters in strings are escaped), which is what
guarantees that every `data:` field is a single line.
"""

from __future__ import annotations

from typing import Any

import orjson

PING = b": ping\n\n"
"""A comment frame: ignored by every SSE client, but it keeps proxies from
closing a stream that is idle while a slow model thinks."""


def retry_field(milliseconds: int) -> bytes:
    """The `retry:` line telling a reconnecting EventSource how long to wait."""
    return b"retry: %d\n" % milliseconds


def encode_event(event: str, event_id: str, data: dict[str, Any], prefix: bytes = b"") -> bytes:
    """One complete SSE frame: `event:`, `id:` and a single-line JSON `data:`.

    `prefix` is prepended verbatim (used for the `retry:` line of the first frame).
    """
    return b"".join(
        (
            prefix,
            b"event: ",
            event.encode(),
            b"\nid: ",
            event_id.encode(),
            b"\ndata: ",
            orjson.dumps(data),
            b"\n\n",
        )
    )


def encode_unnumbered(event: str, data: dict[str, Any]) -> bytes:
    """A frame without `id:`: a client's Last-Event-ID stays at the last real event.

    For what a connection says about itself (its store failed while following a
    reply), not part of the reply: a reconnect must resume where it was.
    """
    return b"".join((b"event: ", event.encode(), b"\ndata: ", orjson.dumps(data), b"\n\n"))


def encode_reconnect(retry_ms: int, reason: str) -> bytes:
    """`retry:` and an unnumbered `reconnect` event: come back (elsewhere) in `retry_ms`.

    Sent by a draining server just before it closes a stream; the client's
    Last-Event-ID stays at the last real event, so its resume continues there.
    """
    data = {"type": "reconnect", "reason": reason, "retry_ms": retry_ms}
    return retry_field(retry_ms) + encode_unnumbered("reconnect", data)
