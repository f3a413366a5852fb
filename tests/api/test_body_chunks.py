"""A streaming response writes its body chunks straight to the socket on our protocols.

uvicorn with each of our protocol classes serves, in this process on a real
loopback socket, an `EventStreamResponse` whose frames come one by one. The
app counts what reaches the ASGI `send`: on HTTP/1.1 only the start and the
last body (which ends the response) may; every other chunk must be written by
the server's `BodyChunks`, framed exactly as uvicorn frames it. Where the body
is not chunked (HTTP/1.0) everything goes through `send` as before, and a
connection kept alive serves its next request normally after a direct write.
On h11, the end of a response (its last chunk and the terminator, two writes
in uvicorn's `send`) goes out in one write: counted on uvicorn's own request
cycle and h11, writing to a transport that keeps each write.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import h11
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from chatbot_sse.api.streaming import EventStreamResponse, task_source
from chatbot_sse.body_chunks import BODY_CHUNKS, H11Chunks
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import FrameWrite
from chatbot_sse.request_deadline import H11DeadlineProtocol, RequestDeadlineProtocol
from chatbot_sse.response_head import HeldHead
from cyclesupport import Wire, h11_cycle
from livesupport import free_port

FRAMES = [f"event: message\ndata: {n}\n\n".encode() for n in range(6)]


class CountingApp:
    """Streams FRAMES, 20 ms apart (each its own batch), counting the `send`s it makes."""

    def __init__(self) -> None:
        self.sends: list[dict[str, Any]] = []
        self.chunk_writers: list[object] = []
        self.metrics = Metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.chunk_writers.append(scope.get("extensions", {}).get(BODY_CHUNKS))

        async def counted(message: Any) -> None:
            self.sends.append(message)
            await send(message)

        async def generate(write: FrameWrite) -> None:
            for frame in FRAMES:
                await write(frame)
                await asyncio.sleep(0.02)

        response = EventStreamResponse(task_source(generate), keepalive=30, metrics=self.metrics)
        await response(scope, receive, counted)

    def body_sends(self, more_body: bool) -> int:
        return sum(
            1
            for m in self.sends
            if m["type"] == "http.response.body" and m.get("more_body", False) is more_body
        )


@pytest.fixture(params=["h11", "httptools"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[CountingApp, int, str]]:
    protocol = H11DeadlineProtocol if request.param == "h11" else RequestDeadlineProtocol
    if request.param == "httptools":
        assert RequestDeadlineProtocol is not H11DeadlineProtocol, "httptools is not installed"
    app = CountingApp()
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=protocol, loop="asyncio", lifespan="off",
        log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield app, port, request.param
    finally:
        server.should_exit = True
        thread.join(10)


def _request(version: str = "1.1") -> bytes:
    return f"GET /stream HTTP/{version}\r\nHost: test\r\n\r\n".encode()


def _read_response(recv: Callable[[int], bytes], buffer: bytes = b"") -> tuple[bytes, bytes]:
    """One chunked response, `buffer` and then what `recv` reads: (head, the chunks' payloads
    joined). Parses the framing strictly: each size line, exactly that many bytes, CRLF.
    """

    def need(size: int) -> None:
        nonlocal buffer
        while len(buffer) < size:
            got = recv(65536)
            assert got, f"the connection closed mid-response: {buffer!r}"
            buffer += got

    while b"\r\n\r\n" not in buffer:
        need(len(buffer) + 1)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    payload = b""
    while True:
        while b"\r\n" not in buffer:
            need(len(buffer) + 1)
        size_line, buffer = buffer.split(b"\r\n", 1)
        size = int(size_line, 16)
        need(size + 2)
        chunk, tail, buffer = buffer[:size], buffer[size : size + 2], buffer[size + 2 :]
        assert tail == b"\r\n", f"chunk of {size} bytes not followed by CRLF: {tail!r}"
        if size == 0:
            assert buffer == b"", "bytes after the last chunk"
            return head, payload
        payload += chunk


def test_http11_chunks_go_straight_to_the_socket(served: tuple[CountingApp, int, str]) -> None:
    app, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request())
        head, payload = _read_response(sock.recv)
    assert head.startswith(b"HTTP/1.1 200")
    assert payload == b"".join(FRAMES)
    assert app.chunk_writers[0] is not None
    # Frames come 20 ms apart: without the shortcut each would be a `send` of its own.
    assert app.body_sends(more_body=True) == 0
    assert app.body_sends(more_body=False) == 1


def test_a_kept_alive_connection_serves_the_next_request(
    served: tuple[CountingApp, int, str],
) -> None:
    app, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(_request())
            _, payload = _read_response(sock.recv)
            assert payload == b"".join(FRAMES)
    assert len(app.chunk_writers) == 2
    assert app.chunk_writers[0] is not app.chunk_writers[1]  # one per request cycle
    assert app.body_sends(more_body=True) == 0


def test_http10_clients_get_what_uvicorn_gives_them(served: tuple[CountingApp, int, str]) -> None:
    """h11 answers HTTP/1.0 with a body that ends with the connection, no chunks: all of it
    through `send`. uvicorn's httptools protocol answers it chunked, as it does HTTP/1.1:
    the shortcut frames those chunks the same way."""
    app, port, protocol = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request("1.0"))
        raw = b""
        while chunk := sock.recv(65536):  # the server closes the connection after it
            raw += chunk
    if protocol == "h11":
        head, body = raw.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding" not in head.lower()
        assert body == b"".join(FRAMES)
        assert app.body_sends(more_body=True) == len(FRAMES)
    else:
        head, body = _read_response(lambda _: b"", raw)
        assert body == b"".join(FRAMES)
        assert app.body_sends(more_body=True) == 0


async def _start(cycle: Any) -> None:
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})


async def test_h11_writes_frame_chunks_only_once_the_response_started() -> None:
    wire = Wire()
    cycle, _ = h11_cycle(wire)
    chunks = H11Chunks(cycle)
    assert not chunks.write(b"too early")  # no head yet: h11 has not chosen the framing
    await _start(cycle)
    assert chunks.write(b"hello")
    assert wire.writes[-1] == b"5\r\nhello\r\n"
    cycle.flow.pause_writing()  # the socket is backed up: `send` must wait for it
    assert not chunks.write(b"later")
    cycle.flow.resume_writing()
    cycle.disconnected = True  # the client left: `send` drops it
    assert not chunks.write(b"gone")
    assert len(wire.writes) == 2  # the head, one chunk


async def test_h11_end_writes_the_last_chunk_and_the_terminator_at_once() -> None:
    wire = Wire()
    cycle, ended = h11_cycle(wire)
    chunks = H11Chunks(cycle)
    await _start(cycle)
    await chunks.end(cycle.send, b"bye")
    assert wire.writes[1:] == [b"3\r\nbye\r\n0\r\n\r\n"]
    assert ended == [1]
    assert cycle.response_complete
    assert cycle.conn.our_state is h11.DONE
    assert cycle.transport is wire  # the pairing is gone with its send


async def test_h11_end_on_a_closing_connection_writes_before_closing() -> None:
    wire = Wire()
    cycle, _ = h11_cycle(wire)
    cycle.keep_alive = False
    await _start(cycle)
    await H11Chunks(cycle).end(cycle.send, b"")
    assert wire.writes[1:] == [b"0\r\n\r\n"]
    assert wire.closed


async def test_h11_end_with_the_socket_backed_up_waits_as_send_does() -> None:
    wire = Wire()
    cycle, ended = h11_cycle(wire)
    await _start(cycle)
    cycle.flow.pause_writing()
    ending = asyncio.ensure_future(H11Chunks(cycle).end(cycle.send, b"bye"))
    await asyncio.sleep(0.01)
    assert not ending.done()
    assert len(wire.writes) == 1
    cycle.flow.resume_writing()
    await ending
    assert b"".join(wire.writes[1:]) == b"3\r\nbye\r\n0\r\n\r\n"
    assert ended == [1]


async def test_h11_end_right_after_the_start_is_one_write_with_the_held_head() -> None:
    """A reply that is whole at once (a replay): head, last chunk and terminator together."""
    wire = Wire()
    cycle, ended = h11_cycle(wire)
    cycle.transport = HeldHead(wire, cycle, asyncio.get_running_loop())  # as our protocols do
    await _start(cycle)
    assert wire.writes == []  # the head waits for the body
    await H11Chunks(cycle).end(cycle.send, b"all")
    assert len(wire.writes) == 1
    assert wire.writes[0].startswith(b"HTTP/1.1 200 ")
    assert wire.writes[0].endswith(b"\r\n\r\n3\r\nall\r\n0\r\n\r\n")
    assert cycle.transport is wire
    assert ended == [1]
