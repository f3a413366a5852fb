"""A client that leaves mid-reply is noticed at once, told by the server's protocol or not.

On our uvicorn protocols the connection's `ConnectionNotice` tells the response
(no watcher task); elsewhere (another ASGI server, an in-process client) the
response's watcher hears `http.disconnect` from `receive()`. Both are driven
here in process; the live tests drive the notice on both of uvicorn's protocols,
including a request pipelined behind the reply, where uvicorn itself only marks
the pipelined request's cycle as disconnected.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatbot_sse.api.streaming import EventStreamResponse, task_source
from chatbot_sse.disconnect_notice import DISCONNECT_NOTICE, ConnectionNotice
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import FrameWrite
from livesupport import ServerProcess, parse_sse, read_until


def disconnects(metrics: Metrics) -> float | None:
    """Client disconnects the response reported (the compiled build takes only real Metrics)."""
    return metrics.registry.get_sample_value("chatbot_sse_client_disconnects_total")


class Flow:
    """uvicorn's flow control, as far as the notice uses it."""

    def __init__(self) -> None:
        self.resumed = 0

    def resume_reading(self) -> None:
        self.resumed += 1


async def _silent_engine(write: FrameWrite) -> None:
    await write(b"event: connected\ndata: {}\n\n")
    await asyncio.Event().wait()  # the engine says nothing more, ever


def _response(metrics: Metrics) -> EventStreamResponse:
    return EventStreamResponse(task_source(_silent_engine), keepalive=30, metrics=metrics)


async def _sink(message: Any) -> None:
    """The server's `send`: takes everything."""


async def test_without_a_notice_the_watcher_hears_the_disconnect() -> None:
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    metrics = Metrics()
    response = asyncio.ensure_future(_response(metrics)({"type": "http"}, receive, _sink))
    await asyncio.sleep(0.05)
    assert not response.done()  # streaming, silent engine, patient client
    left.set()
    await asyncio.wait_for(response, 2)
    assert disconnects(metrics) == 1.0


async def test_with_a_notice_the_protocol_tells_and_receive_is_never_called() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("a response told by the notice must not wait in receive()")

    flow = Flow()
    notice = ConnectionNotice(flow)
    scope = {"type": "http", "extensions": {DISCONNECT_NOTICE: notice}}
    metrics = Metrics()
    response = asyncio.ensure_future(_response(metrics)(scope, receive, _sink))
    await asyncio.sleep(0.05)
    assert not response.done()
    assert flow.resumed == 1  # as uvicorn's receive() would, so the EOF can be read
    notice.connection_lost()
    await asyncio.wait_for(response, 2)
    assert disconnects(metrics) == 1.0


async def test_a_client_gone_before_the_response_starts_ends_it_at_once() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("not called")

    notice = ConnectionNotice(Flow())
    notice.connection_lost()
    metrics = Metrics()
    scope = {"type": "http", "extensions": {DISCONNECT_NOTICE: notice}}
    await asyncio.wait_for(_response(metrics)(scope, receive, _sink), 2)
    assert disconnects(metrics) == 1.0


async def test_a_finished_response_unregisters_so_a_later_loss_calls_nothing() -> None:
    calls: list[str] = []
    notice = ConnectionNotice(Flow())
    notice.register(lambda: calls.append("first"))
    notice.register(None)  # that response ended
    notice.connection_lost()
    assert calls == []


_STORY = b"message=Tell+me+a+story"
POST_CHAT = (
    b"POST /chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_STORY), _STORY)
)


@pytest.mark.parametrize("kind", ["uvicorn", "h11"])
@pytest.mark.parametrize("pipelined", [False, True], ids=["alone", "pipelined"])
def test_a_client_leaving_mid_reply_stops_it_on_both_protocols(
    kind: str, pipelined: bool, tmp_path: object
) -> None:
    server = ServerProcess(
        {
            "STORE_URL": f"sqlite:///{tmp_path}/chat.db",
            "RESPONSE_DELAY": "0",
            "TOKEN_DELAY": "0.1",
            "DISCONNECT_GRACE_SECONDS": "0",
        },
        kind=kind,
        log_path=Path(str(tmp_path)) / "server.log",
    )
    server.start()
    try:
        request = POST_CHAT
        if pipelined:  # a second request right behind: it waits for the reply to end
            request += b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
            raw = read_until(sock, b"event: message", 3)
        events, _, _ = parse_sse(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[1])
        cid = events[0].data["conversation_id"]
        deadline = time.monotonic() + 3  # the story has ~100 words: 10 s if nobody noticed
        messages: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            messages = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
            if len(messages) == 2:
                break
            time.sleep(0.1)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["status"] == "interrupted"
        metrics = httpx.get(server.url + "/metrics").text
        assert "chatbot_sse_client_disconnects_total 1.0" in metrics
    finally:
        server.stop()


def test_a_v1_client_leaving_mid_stream_is_a_disconnect_not_an_error(tmp_path: object) -> None:
    """`/v1` generates for its connection alone (`task_source`), which is stopped on the way
    out: compiled, awaiting that stopped task once escaped as an unhandled CancelledError."""
    log_path = Path(str(tmp_path)) / "server.log"
    server = ServerProcess(
        {"STORE_URL": "memory://", "RESPONSE_DELAY": "0", "TOKEN_DELAY": "0.1"},
        log_path=log_path,
    )
    server.start()
    try:
        body = json.dumps(
            {"model": "any", "stream": True, "messages": [{"role": "user", "content": "A story"}]}
        ).encode()
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
            read_until(sock, b"data:", 3)
        deadline = time.monotonic() + 5
        metrics = ""
        while time.monotonic() < deadline:
            metrics = httpx.get(server.url + "/metrics").text
            if "chatbot_sse_client_disconnects_total 1.0" in metrics:
                break
            time.sleep(0.1)
        assert "chatbot_sse_client_disconnects_total 1.0" in metrics
        assert "chatbot_sse_active_streams 0.0" in metrics
    finally:
        server.stop()
    assert "Exception in ASGI application" not in log_path.read_text()
