"""Limits: requests per minute and concurrent streams across workers and instances, streams
per worker, the longest reply, and readers that fall behind."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fault_upstream import FaultUpstream
from hardsupport import (
    KEY_A,
    KEY_B,
    KEYS,
    bearer,
    complete_events,
    dechunk,
    log_records,
    metric,
    open_stream,
    read_head,
    read_to_end,
    wait_until,
)

from livesupport import ServerProcess, Stream, parse_sse, post_chat
from redissupport import delete_prefix, require_redis, unique_prefix


def test_rate_limit_trips_at_the_limit_across_workers(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Two server processes on one SQLite file, as gunicorn workers are: one shared window.

    Requests alternate between the processes explicitly; with gunicorn the kernel decides
    which worker accepts a connection, and under load one worker may take them all.
    """
    env = {
        "STORE_URL": f"sqlite:///{tmp_path}/shared.db",
        "API_KEYS": KEYS,
        "RATE_LIMIT_PER_MINUTE": "8",
        "TOKEN_DELAY": "0.01",
    }
    server, other = start_server(**env), start_server(**env)

    def one(index: int) -> Stream:
        target = (server, other)[index % 2]
        return post_chat(target.url, data={"message": f"Hello {index}"}, headers=bearer(KEY_A))

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        streams = list(pool.map(one, range(12)))
    statuses = sorted(stream.status for stream in streams)
    assert statuses == [200] * 8 + [429] * 4
    for stream in streams:
        if stream.status == 429:
            assert json.loads(stream.raw)["error"]["code"] == "rate_limited"
            assert 1 <= int(stream.headers["retry-after"]) <= 60
        else:
            assert stream.last.event == "completed"
    # Another key has its own window; /health and /metrics are not counted.
    assert post_chat(server.url, data={"message": "Hi"}, headers=bearer(KEY_B)).status == 200
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/metrics", headers=bearer(KEY_A)).status_code == 200
    rejected = 'chatbot_sse_requests_rejected_total{reason="rate_limited"}'
    assert metric(server, rejected, bearer(KEY_B)) + metric(other, rejected, bearer(KEY_B)) == 4


def test_rate_limit_is_shared_by_instances_through_redis(
    start_server: Callable[..., ServerProcess],
) -> None:
    url, prefix = require_redis(), unique_prefix()
    try:
        env = {"STORE_URL": f"{url}?prefix={prefix}", "RATE_LIMIT_PER_MINUTE": "5"}
        one, two = start_server(**env), start_server(**env)
        statuses = [
            httpx.get(f"{server.url}/conversations/{'0' * 32}/history").status_code
            for server in (one, two) * 4
        ]
        # Without keys the client's IP is counted: both instances count the same window.
        assert statuses == [404] * 5 + [429] * 3
    finally:
        delete_prefix(url, prefix)


def test_concurrent_streams_per_key_across_workers(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(
        "gunicorn", WORKERS="3", API_KEYS=KEYS, MAX_STREAMS_PER_KEY="2", TOKEN_DELAY="0.05"
    )
    held = [open_stream(server, "/simulate slow", bearer(KEY_A)) for _ in range(2)]
    try:
        for sock in held:
            assert read_head(sock)[0] == 200
        third = post_chat(server.url, data={"message": "Hello"}, headers=bearer(KEY_A))
        assert third.status == 429
        assert json.loads(third.raw)["error"]["code"] == "too_many_streams"
        assert int(third.headers["retry-after"]) >= 1
        assert post_chat(server.url, data={"message": "Hi"}, headers=bearer(KEY_B)).status == 200
    finally:
        for sock in held:
            sock.close()
    # The slots are given back when the connections end, whichever worker held them.
    assert wait_until(
        lambda: post_chat(server.url, data={"message": "Hi"}, headers=bearer(KEY_A)).status == 200,
        timeout=10,
        interval=0.3,
    )


def test_streams_per_worker_answer_503(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(MAX_STREAMS_PER_WORKER="1", TOKEN_DELAY="0.05")
    held = open_stream(server, "/simulate slow")
    try:
        assert read_head(held)[0] == 200
        refused = post_chat(server.url, data={"message": "Hello"})
        assert refused.status == 503
        assert json.loads(refused.raw)["error"]["code"] == "server_busy"
        assert int(refused.headers["retry-after"]) >= 1
        assert httpx.get(server.url + "/health").status_code == 200  # not a stream
    finally:
        held.close()
    assert wait_until(lambda: post_chat(server.url, data={"message": "Hi"}).status == 200)


def test_max_stream_duration_stops_the_reply(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(MAX_STREAM_SECONDS="1", TOKEN_DELAY="0.05")
    stream = post_chat(server.url, data={"message": "/simulate slow"}, timeout=10)
    assert stream.status == 200
    error = stream.last
    assert error.event == "error"
    assert error.data["error"]["code"] == "stream_timeout"
    assert error.data["error"]["retryable"] is False
    assert stream.of("message"), "the reply had started"
    cid = stream.events[0].data["conversation_id"]
    messages = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
    assert messages[-1]["status"] == "interrupted"
    assert messages[-1]["meta"]["finish_reason"] == "stream_timeout"
    assert metric(server, 'chatbot_sse_generations_cancelled_total{reason="stream_timeout"}') == 1
    # A stateless /v1 stream is bounded the same way, and counted the same way.
    body = {"messages": [{"role": "user", "content": "/simulate slow"}], "stream": True}
    v1 = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
    last = [line for line in v1.text.splitlines() if line.startswith("data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == "stream_timeout"
    assert metric(server, 'chatbot_sse_generations_cancelled_total{reason="stream_timeout"}') == 2


def test_a_stalled_reader_is_closed_and_can_resume(
    start_server: Callable[..., ServerProcess],
) -> None:
    with FaultUpstream() as upstream:
        upstream.mode = "flood"
        server = start_server(
            ENGINE="openai",
            OPENAI_BASE_URL=upstream.url,
            OPENAI_MODEL="fault-model",
            STREAM_BACKLOG_BYTES="65536",
        )
        # A tiny receive window, and nothing read: the server's sends soon block.
        sock = open_stream(server, "flood me", rcvbuf=4096)
        try:
            cut = 'chatbot_sse_streams_cut_total{reason="slow_reader"}'
            assert wait_until(lambda: metric(server, cut) == 1, timeout=20, interval=0.2)
            status, rest = read_head(sock)
            assert status == 200
            got = complete_events(dechunk(rest + read_to_end(sock)))
        finally:
            sock.close()
    assert got, "what was sent before the cut arrives"
    assert got[-1].event == "message", "closed without a terminal event: the client may resume"
    cid = got[0].data["conversation_id"]
    # The reply went on without its reader; the client resumes after the last event it got.
    with httpx.stream(
        "GET",
        f"{server.url}/conversations/{cid}/stream",
        headers={"Last-Event-ID": str(got[-1].id)},
        timeout=30,
    ) as response:
        rest_events = parse_sse(response.read())[0]
    events = got + rest_events
    reply_id = events[0].data["message_id"]
    assert [e.id for e in events] == [f"{reply_id}:{n}" for n in range(len(events))]
    assert events[-1].event == "completed"
    cuts = [r for r in log_records(server) if r.get("event") == "stream_cut"]
    assert [r["reason"] for r in cuts] == ["slow_reader"]


def test_a_slow_reader_that_catches_up_is_not_cut(
    start_server: Callable[..., ServerProcess],
) -> None:
    """A fast reader, and a resume replaying a reply from its start, are not behind."""
    server = start_server(STREAM_BACKLOG_BYTES="1024")
    first = post_chat(server.url, data={"message": "Tell me a long story"})
    assert first.last.event == "completed"
    cid = first.events[0].data["conversation_id"]
    with httpx.stream("GET", f"{server.url}/conversations/{cid}/stream", timeout=10) as response:
        replayed = parse_sse(response.read())[0]
    assert [e.id for e in replayed] == [e.id for e in first.events]
    assert metric(server, 'chatbot_sse_streams_cut_total{reason="slow_reader"}') == 0


@pytest.mark.parametrize("value", ["*", "https://*.example.com", "example.com"])
def test_cors_origins_must_be_exact(value: str) -> None:
    from pydantic import ValidationError

    from chatbot_sse.config import Settings

    with pytest.raises(ValidationError, match="CORS"):
        Settings(cors_origins=value)
