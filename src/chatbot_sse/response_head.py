"""A response's head written together with its first body bytes: one write, not two.

uvicorn writes a response's status line and headers to the socket as soon as
the app sends `http.response.start`, and the first body chunk with a second
write a moment later, usually in the same turn of the event loop. Each write
is a system call, and on a stream of a few small frames a large share of its
cost: an SSE reply sends its head and then `connected` at once. `hold_head`
gives a new request's cycle a transport that keeps the head until the first
body write, which takes it along, or until the end of the current turn of the
event loop, whichever comes first: a head is never later than it would have
been by more than the rest of that turn.

Wired into the server's protocol classes (`request_deadline`), after each
`data_received`: uvicorn makes the request's cycle there, before the app has
run. The cycle's transport is swapped for the head's lifetime only.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeldHead:
    """The transport of one response until its head has gone out with its first body write.

    Only what uvicorn's request cycles call on their transport is here: `write`,
    `close` and `is_closing`.
    """

    __slots__ = ("_cycle", "_flush", "_head", "_loop", "_transport")

    def __init__(
        self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._head = b""
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._flush is None:  # the head: it waits, at most until this turn of the loop ends
            self._head = data
            self._flush = self._loop.call_soon(self._release)
            return
        self._flush.cancel()
        self._release(data)

    def _release(self, data: bytes = b"") -> None:
        # The handle that ran this refers back to it: keeping it would make this, and the
        # request's whole cycle, garbage that only the collector frees.
        self._flush = None
        self._cycle.transport = self._transport  # later writes go straight to the socket
        self._transport.write(self._head + data if data else self._head)

    def close(self) -> None:
        if self._flush is not None:  # a head held (once it is out, the cycle has its transport)
            self._flush.cancel()
            self._release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def hold_head(protocol: Any) -> None:
    """Give the protocol's new request cycle, if its response has not started, a `HeldHead`."""
    cycle = protocol.cycle
    transport = protocol.transport
    if cycle is not None and cycle.transport is transport and not cycle.response_started:
        cycle.transport = HeldHead(transport, cycle, protocol.loop)
