"""A streaming response's body chunks written straight to the socket, not through `send`.

Every body chunk an ASGI app sends goes through the server's `send`: a
coroutine, a message dict, and on h11 the whole protocol state machine
(`Connection.send(Data(...))`: event validation, state transitions, the
writer's three pieces joined) only to frame the bytes as one HTTP chunk. A
paced reply sends about twenty of them, and on asyncio + h11 that machinery
was a sixth of the server's CPU in a wave of 1,000 paced replies (py-spy,
docs/bench.md), as much as the socket writes themselves.

The server's protocol classes (`request_deadline`) put a `BodyChunks` in each
request's scope as the ASGI extension `BODY_CHUNKS`. Once the response has
started, `write` frames a chunk itself and writes it to the request cycle's
transport, as uvicorn would have, and returns True. It returns False, leaving
the chunk to the ASGI `send`, whenever uvicorn has anything more to do than
write: the socket is backed up (`send` waits for it to drain), the client
left (`send` drops the chunk), the response is not chunked (HTTP/1.0,
`HEAD`, a `Content-Length`), has not started, or has ended. The last chunk of
a response goes through `send` too, since uvicorn must hear that it ended.
"""

from __future__ import annotations

from typing import Any


def _h11_chunked_writer() -> type | None:
    """h11's writer of chunked bodies; an h11 that moved it only loses the shortcut."""
    try:
        from h11._writers import ChunkedWriter
    except ImportError:  # pragma: no cover - h11 0.16 has it
        return None
    return ChunkedWriter


_CHUNKED_WRITER = _h11_chunked_writer()

__all__ = ["BODY_CHUNKS", "BodyChunks", "H11Chunks", "HttpToolsChunks"]

BODY_CHUNKS = "chatbot_sse.body_chunks"
"""The scope's `extensions` key under which a request finds its `BodyChunks`."""


class BodyChunks:
    """Writes body chunks of one request cycle's response; the base serves no response."""

    __slots__ = ("_cycle", "_head")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle  # uvicorn's RequestResponseCycle
        self._head = cycle.scope.get("method") == "HEAD"

    def write(self, body: bytes) -> bool:
        """Write `body` as one chunk now: True; False when it must go through `send`."""
        cycle = self._cycle
        if (
            self._head
            or not body
            or not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or cycle.flow.write_paused
            or not self._chunked()
        ):
            return False
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return True

    def _chunked(self) -> bool:
        return False


class H11Chunks(BodyChunks):
    """For uvicorn's h11 protocol: chunked when h11 chose its chunked writer."""

    __slots__ = ()

    def _chunked(self) -> bool:
        # h11 picks the body's framing when the head is sent and keeps its writer in
        # `_writer`; an h11 without it (renamed, moved) only loses the shortcut.
        writer = getattr(self._cycle.conn, "_writer", None)
        return _CHUNKED_WRITER is not None and isinstance(writer, _CHUNKED_WRITER)


class HttpToolsChunks(BodyChunks):
    """For uvicorn's httptools protocol: chunked when its cycle said so at the head."""

    __slots__ = ()

    def _chunked(self) -> bool:
        return self._cycle.chunked_encoding is True
