"""Pacing, keep-alive pings, disconnects and restarts, against real server processes."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import httpx

from livesupport import ServerProcess, Stream, parse_sse, read_until


def test_pings_start_before_the_first_chunk(
    start_server: Callable[..., ServerProcess], chat: Callable[..., Stream]
) -> None:
    slow = start_server(RESPONSE_DELAY="1.0", TOKEN_DELAY="0", KEEPALIVE_SECONDS="0.2")
    stream = chat(slow.url, data={"message": "hello"})
    assert stream.last.event == "completed"
    first_ping = stream.raw.index(b": ping\n\n")
    assert first_ping < stream.raw.index(b"event: message")
    assert stream.raw.index(b"event: connected") < first_ping
    assert stream.comments.count("ping") >= 3  # ~1 s of silence at 0.2 s intervals


def test_chunks_arrive_paced_not_buffered(
    start_server: Callable[..., ServerProcess],
) -> None:
    """With TOKEN_DELAY the first chunk arrives long before the last: nothing buffers."""
    paced = start_server(RESPONSE_DELAY="0", TOKEN_DELAY="0.01")  # 160 chunks: 1.6 s
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream("POST", paced.url + "/chat", data={"message": "Tell me a story"}) as r:
        for line in r.iter_lines():
            if line.startswith("event: message"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) > 20
    assert arrivals[-1] - arrivals[0] > 0.5  # spread over the reply, as paced


def test_disconnect_without_grace_stops_generation_and_stores_the_partial_reply(
    start_server: Callable[..., ServerProcess],
) -> None:
    slow = start_server(RESPONSE_DELAY="0", TOKEN_DELAY="0.1", DISCONNECT_GRACE_SECONDS="0")
    body = b"message=Tell+me+a+story"
    request = (
        b"POST /chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", slow.port)) as sock:
        sock.sendall(request)
        raw = read_until(sock, b"event: message", 3)
    events, _, _ = parse_sse(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[1])
    cid = events[0].data["conversation_id"]
    seen = "".join(e.data["content"] for e in events if e.event == "message")
    deadline = time.monotonic() + 10
    messages: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        messages = httpx.get(f"{slow.url}/conversations/{cid}/history").json()["messages"]
        if len(messages) == 2:
            break
        time.sleep(0.1)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply["status"] == "interrupted"
    assert reply["content"].startswith(seen)
    # Generation stopped at once: far fewer chunks than the story has words.
    assert len(reply["content"].split()) < 40
    metrics = httpx.get(slow.url + "/metrics").text
    assert 'chatbot_sse_streams_total{outcome="interrupted"} 1.0' in metrics
    assert "chatbot_sse_client_disconnects_total 1.0" in metrics
    assert "chatbot_sse_active_streams 0.0" in metrics


def test_conversations_survive_a_restart(
    start_server: Callable[..., ServerProcess], chat: Callable[..., Stream], tmp_path: object
) -> None:
    first = start_server(STORE_URL=f"sqlite:///{tmp_path}/persist.db")
    stream = chat(first.url, data={"message": "Hello, my name is Grace"})
    cid = stream.events[0].data["conversation_id"]
    # uvicorn shuts down gracefully, then re-raises SIGTERM to report how it ended.
    assert first.stop() in (0, -signal.SIGTERM)
    second = start_server(STORE_URL=f"sqlite:///{tmp_path}/persist.db")
    history = httpx.get(f"{second.url}/conversations/{cid}/history").json()["messages"]
    assert history[0]["content"] == "Hello, my name is Grace"
    again = chat(second.url, data={"message": "What is my name?", "conversation_id": cid})
    assert "Grace" in again.last.data["content"]
