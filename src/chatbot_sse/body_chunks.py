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
a response goes through `send` too, since uvicorn must hear that it ended
(`end`); on h11, whose `send` writes that chunk and the body's terminator one
after the other, the two go out in one write (one system call of the ~4 a reply
makes at full speed).
"""

from __future__ import annotations

import weakref
from typing import Any

from starlette.types import Send

__all__ = ["BODY_CHUNKS", "BodyChunks", "H11Chunks", "HttpToolsChunks"]

BODY_CHUNKS = "chatbot_sse.body_chunks"
"""The scope's `extensions` key under which a request finds its `BodyChunks`."""


def _h11_chunked_writer() -> type | None:
    """h11's writer of chunked bodies; an h11 that moved it only loses the shortcut."""
    try:
        from h11._writers import ChunkedWriter
    except ImportError:  # pragma: no cover - h11 0.16 has it
        return None
    return ChunkedWriter


_CHUNKED_WRITER = _h11_chunked_writer()


class BodyChunks:
    """Writes body chunks of one request cycle's response; the base serves no response."""

    __slots__ = ("_cycle", "_head")

    def __init__(self, cycle: Any) -> None:
        # uvicorn's RequestResponseCycle, weakly: it holds this in its scope, and a cycle of
        # references would leave every request to the garbage collector.
        self._cycle = weakref.ref(cycle)
        self._head = cycle.scope.get("method") == "HEAD"

    def write(self, body: bytes) -> bool:
        """Write `body` as one chunk now: True; False when it must go through `send`."""
        cycle = self._cycle()
        if (
            cycle is None
            or self._head
            or not body
            or not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or cycle.flow.write_paused
            or not self._chunked(cycle)
        ):
            return False
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return True

    async def end(self, send: Send, body: bytes) -> None:
        """Send `body` as the response's last chunk, through `send`: uvicorn must see the end."""
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _chunked(self, cycle: Any) -> bool:
        return False


class H11Chunks(BodyChunks):
    """For uvicorn's h11 protocol: chunked when h11 chose its chunked writer."""

    __slots__ = ()

    def _chunked(self, cycle: Any) -> bool:
        # h11 picks the body's framing when the head is sent and keeps its writer in
        # `_writer`; an h11 without it (renamed, moved) only loses the shortcut.
        writer = getattr(cycle.conn, "_writer", None)
        return _CHUNKED_WRITER is not None and isinstance(writer, _CHUNKED_WRITER)

    async def end(self, send: Send, body: bytes) -> None:
        """uvicorn writes the last chunk, then h11's terminator: here both in one write."""
        cycle = self._cycle()
        message = {"type": "http.response.body", "body": body, "more_body": False}
        if (
            cycle is None
            or cycle.flow.write_paused
            or not cycle.response_started
            or cycle.response_complete
        ):
            # uvicorn's `send` would wait (for the socket, in which time anything may write)
            # or refuse: left to it alone.
            await send(message)
            return
        paired = _Paired(cycle.transport, cycle)
        cycle.transport = paired
        try:
            await send(message)  # not paused: it writes without waiting
        finally:
            paired.release()  # if the send ended before its second write


class HttpToolsChunks(BodyChunks):
    """For uvicorn's httptools protocol: chunked when its cycle said so at the head.

    Its `send` already writes a response's last chunk and terminator together.
    """

    __slots__ = ()

    def _chunked(self, cycle: Any) -> bool:
        return cycle.chunked_encoding is True


class _Paired:
    """A cycle's transport for one `send`: its first write waits for the second, or the end.

    Only what uvicorn's request cycles call on their transport is here: `write`,
    `close` and `is_closing`. The second write releases both at once, before
    anything that follows it in uvicorn (closing the connection, starting the
    next request's cycle) can write.
    """

    __slots__ = ("_cycle", "_first", "_transport")

    def __init__(self, transport: Any, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._first: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._first is None:
            self._first = data
            return
        self._cycle.transport = self._transport
        self._transport.write(self._first + data)
        self._first = None

    def release(self) -> None:
        if self._cycle.transport is self:
            self._cycle.transport = self._transport
        if self._first:
            self._transport.write(self._first)
        self._first = None

    def close(self) -> None:
        self.release()
        self._transport.close()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())
