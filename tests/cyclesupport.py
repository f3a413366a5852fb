"""uvicorn's own h11 request cycle, writing to a transport that keeps each write.

For tests of what reaches the socket write by write (each write a system call
on a real transport): the framing of body chunks, which writes are joined, and
what waits for a backed-up socket (`cycle.flow.pause_writing()`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import RequestResponseCycle


class Wire:
    """A transport that keeps what is written to it, write by write (each a system call).

    With an `inner` transport (a real socket's), the writes go on to it as well: what the
    kernel was handed, counted.
    """

    def __init__(self, inner: asyncio.Transport | None = None) -> None:
        self.inner = inner
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))
        if self.inner is not None:
            self.inner.write(data)

    def close(self) -> None:
        self.closed = True
        if self.inner is not None:
            self.inner.close()

    def is_closing(self) -> bool:
        return self.closed if self.inner is None else self.inner.is_closing()


def h11_cycle(wire: Wire) -> tuple[Any, list[int]]:
    """uvicorn's h11 request cycle for a GET h11 has read, writing to `wire`."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    ended: list[int] = []
    logger = logging.getLogger("test")
    cycle = RequestResponseCycle(
        {"type": "http", "method": "GET", "headers": [], "path": "/stream"},  # type: ignore[typeddict-item]
        conn, wire, FlowControl(wire), logger, logger, False, [], asyncio.Event(),  # type: ignore[arg-type]
        lambda: ended.append(1),
    )  # fmt: skip
    return cycle, ended
