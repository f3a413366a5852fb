"""A chunked response's head costs one validation of its headers (`chatbot_sse.h11_connection`).

`FramedConnection` and h11's own `Connection` are fed the same request and asked to
send the same response, as uvicorn's h11 protocol does: every byte they write and
every state they reach must be the same, for the case the shortcut takes (HTTP/1.1,
no framing header, a connection kept alive) and for every case it leaves to h11.
h11's clean-up is wrapped to count its calls, so the test also shows which cases
took the shortcut. The live-server suites (`tests/api`) run our h11 protocol, which
uses `FramedConnection`, over real sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
import pytest

from chatbot_sse.h11_connection import FramedConnection
from chatbot_sse.request_deadline import H11DeadlineProtocol

SSE_HEADERS = [
    (b"date", b"Fri, 04 Dec 2026 23:00:00 GMT"),
    (b"server", b"uvicorn"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"X-Conversation-Id", b"1a24341900915666cb7826306e3f7d7a"),
    (b"x-request-id", b"0f6930f4950cdf65"),
]

GET = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"
FRAME = b"event: message\ndata: {}\n\n"
CLOSE = b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
POST = b"POST /chat HTTP/1.1\r\nhost: a\r\ncontent-length: 12\r\n\r\nmessage=nice"

# (name, request bytes, status, extra response headers, shortcut taken)
CASES: list[tuple[str, bytes, int, list[tuple[bytes, bytes]], bool]] = [
    ("get", GET, 200, [], True),
    ("post stream", POST, 200, [], True),
    ("not found", GET, 404, [(b"content-type", b"application/json")], True),
    ("head", b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n", 200, [], True),
    ("app says close", GET, 200, [(b"connection", b"close")], True),
    ("HTTP/1.0", b"GET /x HTTP/1.0\r\n\r\n", 200, [], False),
    ("client says close", CLOSE, 200, [], True),
    ("client says close, uvicorn too", CLOSE, 200, [(b"connection", b"close")], True),
    ("close, app keep-alive", CLOSE, 200, [(b"Connection", b"keep-alive, Upgrade")], True),
    ("content-length", GET, 200, [(b"content-length", b"5")], False),
    ("Content-Length", GET, 200, [(b"Content-Length", b"5")], False),
    ("chunked already", GET, 200, [(b"transfer-encoding", b"chunked")], False),
    ("no content", GET, 204, [], False),
    ("not modified", GET, 304, [], False),
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n", 200, [], False),
]


@pytest.fixture
def cleanups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of h11's own header clean-up (the subclass's fallback goes through it too)."""
    calls: list[int] = []
    original: Callable[..., Any] = h11.Connection._clean_up_response_headers_for_sending

    def counted(self: h11.Connection, response: h11.Response) -> h11.Response:
        calls.append(1)
        result: h11.Response = original(self, response)
        return result

    monkeypatch.setattr(h11.Connection, "_clean_up_response_headers_for_sending", counted)
    return calls


def _exchange(cls: type[h11.Connection], request: bytes, status: int, extra: list[Any]) -> Any:
    """Everything `cls` writes for a response to `request`, and the states it ends in."""
    conn = cls(h11.SERVER)
    conn.receive_data(request)
    while conn.their_state is h11.SEND_BODY or conn.their_state is h11.IDLE:
        event = conn.next_event()
        assert event is not h11.NEED_DATA, request
    head = conn.send(h11.Response(status_code=status, headers=SSE_HEADERS + extra, reason=b"OK"))
    states = [(conn.our_state, conn.their_state, type(conn._writer).__name__)]
    body = b""
    if conn.our_state is h11.SEND_BODY:
        declared = dict((name.lower(), value) for name, value in extra).get(b"content-length")
        empty = status in (204, 304) or request.startswith((b"HEAD", b"CONNECT"))
        data = b"" if empty else b"x" * int(declared) if declared else FRAME
        body += conn.send(h11.Data(data=data)) or b""
        body += conn.send(h11.EndOfMessage()) or b""
    states.append((conn.our_state, conn.their_state, type(conn._writer).__name__))
    return head, body, states


@pytest.mark.parametrize(
    ("request_bytes", "status", "extra", "shortcut"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_same_bytes_and_states_as_h11(
    cleanups: list[int], request_bytes: bytes, status: int, extra: list[Any], shortcut: bool
) -> None:
    expected = _exchange(h11.Connection, request_bytes, status, extra)
    assert len(cleanups) == 1  # h11's own connection cleaned up once
    cleanups.clear()

    assert _exchange(FramedConnection, request_bytes, status, extra) == expected
    assert len(cleanups) == (0 if shortcut else 1)


def test_the_chunked_head_is_what_a_client_reads() -> None:
    head, body, states = _exchange(FramedConnection, POST, 200, [])
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"x-request-id: 0f6930f4950cdf65\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert b"X-Conversation-Id: 1a24341900915666cb7826306e3f7d7a\r\n" in head  # its case kept
    assert body == b"19\r\nevent: message\ndata: {}\n\n\r\n0\r\n\r\n"
    assert states[0] == (h11.SEND_BODY, h11.DONE, "ChunkedWriter")
    assert states[1] == (h11.DONE, h11.DONE, "NoneType")


def test_keep_alive_serves_the_next_request_after_a_shortcut() -> None:
    conn = FramedConnection(h11.SERVER)
    for _ in range(2):
        conn.receive_data(GET)
        assert type(conn.next_event()) is h11.Request
        assert type(conn.next_event()) is h11.EndOfMessage
        conn.send(h11.Response(status_code=200, headers=SSE_HEADERS))
        conn.send(h11.EndOfMessage())
        assert (conn.our_state, conn.their_state) == (h11.DONE, h11.DONE)
        conn.start_next_cycle()


def test_our_h11_protocol_uses_it() -> None:
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    assert FramedConnection is not h11.Connection, "the shortcut is off with this h11"
    config = Config(app=lambda scope, receive, send: None, h11_max_incomplete_event_size=4096)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = H11DeadlineProtocol(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()
    assert type(protocol.conn) is FramedConnection
    assert protocol.conn._max_incomplete_event_size == 4096
