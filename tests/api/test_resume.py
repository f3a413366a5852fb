"""Resumable replies: grace window, Last-Event-ID replay, cancel, expiry, across processes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from chatbot_sse.stores.base import ReplyEvents
from chatbot_sse.stores.sqlite import SQLiteStore
from livesupport import Event, ServerProcess, Stream, parse_sse


def open_chat(server: ServerProcess, message: str, conversation_id: str = "") -> socket.socket:
    """POST /chat on a raw socket, so the test decides when the client vanishes."""
    body = f"message={message.replace(' ', '+')}&conversation_id={conversation_id}".encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


def read_events_until(sock: socket.socket, count: int) -> list[Event]:
    """Read until `count` message events arrived; parse what came (chunked encoding removed)."""
    raw = b""
    while raw.count(b"event: message") < count:
        data = sock.recv(65536)
        assert data, "server closed the stream early"
        raw += data
    body = raw.split(b"\r\n\r\n", 1)[1]
    # Undo chunked transfer encoding: drop the hex size lines between chunks.
    payload = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(rest) < size:
            payload += rest[:size]
            break
        payload += rest[:size]
        body = rest[size + 2 :]
    complete = payload[: payload.rfind(b"\n\n") + 2]
    return parse_sse(complete)[0]


def resume(server: ServerProcess, cid: str, last_id: str | None, **kwargs: object) -> Stream:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with httpx.stream(
        "GET", f"{server.url}/conversations/{cid}/stream", headers=headers, timeout=30, **kwargs
    ) as response:
        raw = response.read()
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events, comments, retry = parse_sse(raw)
        return Stream(response.status_code, response.headers, events, comments, retry, raw)
    return Stream(response.status_code, response.headers, [], [], None, raw)


def assert_exact_reply(first: list[Event], rest: list[Event]) -> str:
    """The two halves form the whole reply: contiguous ids, nothing twice, nothing missing."""
    events = first + rest
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    reply_id = events[0].data["message_id"]
    assert ids == [f"{reply_id}:{n}" for n in range(len(events))]
    assert events[-1].event == "completed"
    joined = "".join(e.data["content"] for e in events if e.event == "message")
    assert joined == events[-1].data["content"]
    return joined


def history(server: ServerProcess, cid: str) -> list[dict[str, str]]:
    response = httpx.get(f"{server.url}/conversations/{cid}/history")
    assert response.status_code == 200
    messages: list[dict[str, str]] = response.json()["messages"]
    return messages


def wait_for_reply(server: ServerProcess, cid: str, timeout: float = 10) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = history(server, cid)
        if len(messages) == 2:
            return messages[1]
        time.sleep(0.05)
    raise AssertionError("the reply was never stored")


def test_dropped_stream_resumes_exactly_within_the_grace_window(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.02", DISCONNECT_GRACE_SECONDS="10")
    with open_chat(server, "Tell me a story") as sock:
        first = read_events_until(sock, 3)
    time.sleep(0.3)  # the client is away while the reply goes on
    cid = first[0].data["conversation_id"]
    rest = resume(server, cid, first[-1].id)
    assert rest.status == 200
    assert rest.retry == 3000
    whole = assert_exact_reply(first, rest.events)
    reply = wait_for_reply(server, cid)
    assert reply["status"] == "complete"
    assert reply["content"] == whole
    metrics = httpx.get(server.url + "/metrics").text
    assert 'chatbot_sse_resumes_total{source="live"} 1.0' in metrics
    assert "chatbot_sse_client_disconnects_total 1.0" in metrics


def test_resume_by_query_parameter_and_from_the_start(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    stream = chat(server.url, data={"message": "Tell me a story"})
    cid = stream.events[0].data["conversation_id"]
    whole = resume(server, cid, None)  # no id: the latest reply from its start
    assert whole.raw.count(b"retry:") == 1  # frame 0 carries it; no second copy
    assert [e.id for e in whole.events] == [e.id for e in stream.events]
    assert whole.events[-1].data == stream.events[-1].data
    tail = resume(server, cid, None, params={"last_event_id": stream.events[4].id})
    assert [e.id for e in tail.events] == [e.id for e in stream.events[5:]]


def test_resuming_a_finished_reply_at_its_end_says_204(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    """204 is what makes a browser's EventSource stop reconnecting."""
    stream = chat(server.url, data={"message": "hello"})
    cid = stream.events[0].data["conversation_id"]
    assert resume(server, cid, stream.events[-1].id).status == 204


def test_nobody_resumes_so_the_generation_stops_and_is_stored_interrupted(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.05", DISCONNECT_GRACE_SECONDS="0.5")
    with open_chat(server, "Tell me a story") as sock:
        first = read_events_until(sock, 2)
    cid = first[0].data["conversation_id"]
    reply = wait_for_reply(server, cid)
    assert reply["status"] == "interrupted"
    seen = "".join(e.data["content"] for e in first if e.event == "message")
    assert reply["content"].startswith(seen)
    assert len(reply["content"].split()) < 60  # stopped well before the story's end
    tail = resume(server, cid, first[-1].id)
    assert tail.events[-1].event == "error"
    assert tail.events[-1].data["error"]["code"] == "interrupted"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'chatbot_sse_generations_cancelled_total{reason="interrupted"} 1.0' in metrics
    assert 'chatbot_sse_streams_total{outcome="interrupted"} 1.0' in metrics


def test_cancel_stops_the_reply_at_once(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(TOKEN_DELAY="0.05")
    connected = threading.Event()
    result: dict[str, object] = {}

    def listen() -> None:
        raw = b""
        with httpx.stream("POST", server.url + "/chat", data={"message": "Tell me a story"}) as r:
            for chunk in r.iter_bytes():
                raw += chunk
                if not connected.is_set() and b"event: message" in raw:
                    result["cid"] = parse_sse(raw[: raw.index(b"\n\n") + 2])[0][0].data[
                        "conversation_id"
                    ]
                    connected.set()
        result["events"] = parse_sse(raw)[0]

    thread = threading.Thread(target=listen)
    thread.start()
    assert connected.wait(10)
    cid = str(result["cid"])
    response = httpx.post(f"{server.url}/conversations/{cid}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    thread.join(10)
    events = result["events"]
    assert isinstance(events, list)
    assert events[-1].event == "error"
    assert events[-1].data["error"]["code"] == "cancelled"
    assert events[-1].data["error"]["retryable"] is False
    reply = wait_for_reply(server, cid)
    assert reply["status"] == "interrupted"
    assert reply["meta"]["finish_reason"] == "cancelled"  # type: ignore[index]
    assert len(reply["content"].split()) < 60
    again = httpx.post(f"{server.url}/conversations/{cid}/cancel")
    assert again.json()["status"] == "finished"


def test_expired_reply_answers_410_with_its_result(
    start_server: Callable[..., ServerProcess], chat: Callable[..., Stream]
) -> None:
    server = start_server(EVENT_RETENTION_SECONDS="0.3")
    stream = chat(server.url, data={"message": "hello"})
    cid = stream.events[0].data["conversation_id"]
    time.sleep(1.0)
    gone = resume(server, cid, stream.events[1].id)
    assert gone.status == 410
    body = json.loads(gone.raw)
    assert body["error"]["code"] == "reply_expired"
    assert body["message"]["content"] == stream.events[-1].data["content"]


@pytest.mark.parametrize(
    ("last_id", "status", "code"),
    [
        ("nonsense", 422, "invalid_event_id"),
        ("0" * 28 + ":3", 404, "reply_not_found"),
    ],
)
def test_bad_resume_requests(
    server: ServerProcess, chat: Callable[..., Stream], last_id: str, status: int, code: str
) -> None:
    stream = chat(server.url, data={"message": "hello"})
    cid = stream.events[0].data["conversation_id"]
    response = resume(server, cid, last_id)
    assert response.status == status
    assert json.loads(response.raw)["error"]["code"] == code
    assert resume(server, "f" * 32, None).status == 404


def test_an_id_ahead_of_a_live_reply_is_refused_at_once(
    start_server: Callable[..., ServerProcess],
) -> None:
    """No client can have seen an event the reply has not made: 422, not a silent hang."""
    server = start_server(TOKEN_DELAY="0.02", DISCONNECT_GRACE_SECONDS="10")  # 160 chunks: 3.2 s
    with open_chat(server, "Tell me a story") as sock:
        first = read_events_until(sock, 2)
        cid = first[0].data["conversation_id"]
        reply_id = first[0].data["message_id"]
        started = time.monotonic()
        ahead = resume(server, cid, f"{reply_id}:500")
        assert time.monotonic() - started < 1.0
        assert ahead.status == 422
        assert json.loads(ahead.raw)["error"]["code"] == "invalid_event_id"
        behind = resume(server, cid, first[-1].id)  # the reply itself goes on, resumable
    assert behind.status == 200
    assert_exact_reply(first, behind.events)


def test_resume_on_another_process_sharing_the_store(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Instance A generates; the client comes back to instance B and gets the rest."""
    shared = f"sqlite:///{tmp_path}/shared.db"
    a = start_server(STORE_URL=shared, TOKEN_DELAY="0.03", DISCONNECT_GRACE_SECONDS="10")
    b = start_server(STORE_URL=shared, TOKEN_DELAY="0.03", DISCONNECT_GRACE_SECONDS="10")
    with open_chat(a, "Tell me a story") as sock:
        first = read_events_until(sock, 3)
    cid = first[0].data["conversation_id"]
    rest = resume(b, cid, first[-1].id)
    assert rest.status == 200
    whole = assert_exact_reply(first, rest.events)
    assert wait_for_reply(b, cid)["content"] == whole
    assert 'chatbot_sse_resumes_total{source="log"} 1.0' in httpx.get(b.url + "/metrics").text


def logged(db: Path, cid: str, reply_id: str) -> ReplyEvents:
    """The reply's log as another process sees it: the shared SQLite file, read directly."""

    async def read() -> ReplyEvents:
        store = SQLiteStore(db)
        await store.open()
        try:
            return await store.read_events(cid, reply_id)
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_log_is_written_mid_reply_only_once_a_reader_elsewhere_follows(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Frames nobody elsewhere reads stay in memory until the reply ends (one write, not one
    every 0.1 s); a follower on another process gets the log mirrored, live, then all of it."""
    db = tmp_path / "shared.db"
    shared = f"sqlite:///{db}"
    a = start_server(STORE_URL=shared, TOKEN_DELAY="0.03")
    b = start_server(STORE_URL=shared, TOKEN_DELAY="0.03")
    with open_chat(a, "Tell me a story") as sock:  # 160 chunks: 4.8 s
        first = read_events_until(sock, 18)  # 0.5 s: five flush intervals
        cid, reply_id = first[0].data["conversation_id"], first[0].data["message_id"]
        before = logged(db, cid, reply_id)
        assert before.exists
        assert not before.finished
        assert before.events == []

        followed: list[Stream] = []
        follower = threading.Thread(target=lambda: followed.append(resume(b, cid, first[-1].id)))
        follower.start()
        deadline = time.monotonic() + 5
        while not (during := logged(db, cid, reply_id)).events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not during.finished, "the log was written only at the end"
        assert [seq for seq, _ in during.events] == list(range(len(during.events)))
        follower.join(30)
        rest = followed[0]
        assert rest.status == 200
        whole = assert_exact_reply(first, rest.events)

    after = logged(db, cid, reply_id)
    assert after.finished
    assert [seq for seq, _ in after.events] == list(range(162))  # connected, 160, completed
    assert wait_for_reply(a, cid)["content"] == whole


def test_cancel_through_another_process_stops_the_generating_one(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    shared = f"sqlite:///{tmp_path}/shared.db"
    a = start_server(STORE_URL=shared, TOKEN_DELAY="0.05", DISCONNECT_GRACE_SECONDS="10")
    b = start_server(STORE_URL=shared, TOKEN_DELAY="0.05", DISCONNECT_GRACE_SECONDS="10")
    with open_chat(a, "Tell me a story") as sock:
        first = read_events_until(sock, 2)
        cid = first[0].data["conversation_id"]
        cancelled_at = time.monotonic()
        response = httpx.post(f"{b.url}/conversations/{cid}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "cancelling"
        raw = b""
        while b"event: error" not in raw:
            data = sock.recv(65536)
            assert data, "stream closed without a terminal event"
            raw += data
        assert time.monotonic() - cancelled_at < 3  # polled every 0.5 s
    assert b'"code":"cancelled"' in raw
    reply = wait_for_reply(b, cid)
    assert reply["status"] == "interrupted"
