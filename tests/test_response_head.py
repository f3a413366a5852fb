"""A response's head goes out with its first body bytes (`chatbot_sse.response_head`).

`HeldHead` is driven over a real socket pair (the kernel sees each write);
the live-server tests check what a client sees on both of uvicorn's protocols,
including an interim `100 Continue`, which must not wait for a head that only
comes after the body it asks for.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from chatbot_sse.response_head import HeldHead, hold_head
from cyclesupport import Wire
from livesupport import ServerProcess, parse_sse


class Recorder(asyncio.Protocol):
    """The far end of the socket pair: every chunk it receives, in order."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)


class Cycle:
    """What `hold_head` and `HeldHead` use of uvicorn's request cycle."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.response_started = False


def held(transport: Any) -> Cycle:
    """A fresh cycle over `transport`, its head held (as `hold_head` leaves it)."""
    cycle = Cycle(transport)
    cycle.transport = HeldHead(transport, cycle, asyncio.get_running_loop())
    return cycle


async def pair() -> tuple[asyncio.Transport, Recorder]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    recorder = Recorder()
    await loop.create_connection(lambda: recorder, sock=theirs)
    return transport, recorder


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


async def close(transport: asyncio.Transport, recorder: Recorder) -> None:
    transport.close()
    if recorder.transport is not None:
        recorder.transport.close()
    await settle()


async def test_the_head_and_the_first_body_bytes_are_one_write() -> None:
    transport, recorder = await pair()
    counted = Wire(transport)
    cycle = held(counted)
    cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert counted.writes == []  # held
    cycle.transport.write(b"first")  # the cycle's next write: through the held head
    assert cycle.transport is counted  # from then on, straight to the socket
    cycle.transport.write(b"second")
    assert counted.writes == [b"HTTP/1.1 200 OK\r\n\r\nfirst", b"second"]
    await settle()
    assert b"".join(recorder.chunks) == b"HTTP/1.1 200 OK\r\n\r\nfirstsecond"
    await close(transport, recorder)


async def test_a_head_alone_goes_out_when_the_loop_turns() -> None:
    transport, recorder = await pair()
    cycle = held(transport)
    cycle.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)  # one turn: no body came in it
    assert cycle.transport is transport
    await settle()
    assert recorder.chunks == [b"HTTP/1.1 200 OK\r\n\r\n"]
    await close(transport, recorder)


async def test_closing_with_a_head_held_sends_it_first() -> None:
    transport, recorder = await pair()
    cycle = held(transport)
    cycle.transport.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    cycle.transport.close()
    await settle()
    assert b"".join(recorder.chunks) == b"HTTP/1.1 500 Internal Server Error\r\n\r\n"
    assert transport.is_closing()
    await close(transport, recorder)


async def test_only_a_cycle_whose_response_has_not_started_is_given_one() -> None:
    transport, recorder = await pair()

    class Protocol:
        def __init__(self, cycle: Cycle | None) -> None:
            self.cycle = cycle
            self.transport = transport
            self.loop = asyncio.get_running_loop()

    fresh = Protocol(Cycle(transport))
    hold_head(fresh)
    assert isinstance(fresh.cycle.transport, HeldHead)  # type: ignore[union-attr]
    kept = fresh.cycle.transport  # type: ignore[union-attr]
    hold_head(fresh)  # more of the request arrived: the same one stays
    assert fresh.cycle.transport is kept  # type: ignore[union-attr]
    started = Cycle(transport)
    started.response_started = True
    answering = Protocol(started)
    hold_head(answering)
    assert started.transport is transport
    hold_head(Protocol(None))  # no request yet: nothing to do
    await close(transport, recorder)


def exchange(server: ServerProcess, request: bytes, body: bytes = b"") -> bytes:
    """Send `request`; with `body`, only after the server's `100 Continue`; read to the end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        if body:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), received
            sock.sendall(body)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return out
        out += rest[:length]
        body = rest[length + 2 :]


@pytest.mark.parametrize("kind", ["uvicorn", "h11"])
def test_responses_are_whole_on_the_wire(
    start_server: Callable[..., ServerProcess], kind: str
) -> None:
    server = start_server(kind)
    health = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = health.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b'"status"' in (dechunk(body) if b"chunked" in head else body)
    form = b"message=nice"
    request = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(form)
    )
    chat = exchange(server, request, form)  # the 100 Continue came before the body was sent
    interim, _, rest = chat.partition(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue"
    head, _, body = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"text/event-stream" in head
    events, _, _ = parse_sse(dechunk(body))
    assert [e.event for e in events] == ["connected", *["message"] * 20, "completed"]
