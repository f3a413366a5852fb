"""Upstream faults, injected by a real HTTP server: each ends the reply with its error code,
stores the partial reply as failed, is counted, and leaves the server serving."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fault_upstream import FaultUpstream, reply_for
from support import free_port_url, history, live_server, metric

from livesupport import ServerProcess, parse_sse, post_chat

RETRIES = 1
TIMEOUTS = {
    "OPENAI_FIRST_TOKEN_TIMEOUT": "0.4",
    "OPENAI_IDLE_TIMEOUT": "0.4",
    "OPENAI_MAX_RETRIES": str(RETRIES),
    "OPENAI_RETRY_BACKOFF": "0.01",
}
MESSAGE = "Tell me something"
WORDS = reply_for([{"role": "user", "content": MESSAGE}])


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUpstream]:
    with FaultUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def front(
    fault: FaultUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("faults")
    # No grace window: a client that leaves stops its reply (and the upstream request) at once.
    server = live_server(
        tmp,
        "front",
        ENGINE="openai",
        OPENAI_BASE_URL=fault.url,
        DISCONNECT_GRACE_SECONDS="0",
        **TIMEOUTS,
    )
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def healthy_again(fault: FaultUpstream) -> Iterator[None]:
    yield
    fault.mode = "ok"
    fault.models_status = 200


def assert_still_serving(front: ServerProcess) -> None:
    stream = post_chat(front.url, data={"message": "and now?"})
    assert stream.last.event == "completed"
    assert stream.last.data["content"] == "".join(
        reply_for([{"role": "user", "content": "and now?"}])
    )


@pytest.mark.parametrize(
    ("mode", "code", "words", "attempts", "retryable"),
    [
        ("stall_headers", "upstream_timeout", 0, 1 + RETRIES, True),
        ("stall_first", "upstream_timeout", 0, 1 + RETRIES, True),
        ("stall_mid", "upstream_timeout", 3, 1, True),
        ("status_500", "upstream_error", 0, 1 + RETRIES, True),
        ("status_429", "upstream_error", 0, 1 + RETRIES, True),
        ("status_400", "upstream_error", 0, 1, False),
        ("status_401", "upstream_error", 0, 1, False),
        ("garbage", "upstream_protocol_error", 0, 1, False),
        ("close_early", "upstream_protocol_error", 3, 1, True),
        ("truncate", "upstream_protocol_error", 3, 1, True),
        ("embedded_error", "upstream_error", 3, 1, True),
    ],
)
def test_fault_ends_the_reply_with_its_code(
    fault: FaultUpstream,
    front: ServerProcess,
    mode: str,
    code: str,
    words: int,
    attempts: int,
    retryable: bool,
) -> None:
    errors_before = metric(front, f'chatbot_sse_errors_total{{code="{code}"}}')
    upstream_before = metric(front, f'chatbot_sse_upstream_requests_total{{outcome="{code}"}}')
    requests_before = len(fault.requests)
    fault.mode = mode
    started = time.monotonic()
    stream = post_chat(front.url, data={"message": MESSAGE})
    assert time.monotonic() - started < 5  # never hangs
    assert stream.last.event == "error", stream.raw
    error = stream.last.data["error"]
    assert error["code"] == code
    assert error["retryable"] is retryable
    seen = "".join(e.data["content"] for e in stream.of("message"))
    assert seen == "".join(WORDS[:words])
    assert len(fault.requests) - requests_before == attempts
    messages = history(front, stream.last.data["conversation_id"])
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "failed"
    assert messages[1]["content"] == seen
    assert metric(front, f'chatbot_sse_errors_total{{code="{code}"}}') == errors_before + 1
    upstream_after = metric(front, f'chatbot_sse_upstream_requests_total{{outcome="{code}"}}')
    assert upstream_after == upstream_before + attempts
    fault.mode = "ok"
    assert_still_serving(front)


def test_a_retry_before_the_first_token_saves_the_reply(
    fault: FaultUpstream, front: ServerProcess
) -> None:
    fault.queue("status_503")
    requests_before = len(fault.requests)
    stream = post_chat(front.url, data={"message": MESSAGE})
    assert stream.last.event == "completed"
    assert stream.last.data["content"] == "".join(WORDS)
    assert len(fault.requests) - requests_before == 2
    assert metric(front, 'chatbot_sse_upstream_requests_total{outcome="upstream_error"}') >= 1


def test_usage_and_finish_reason_come_from_the_upstream(
    fault: FaultUpstream, front: ServerProcess
) -> None:
    fault.mode = "length"
    stream = post_chat(front.url, data={"message": MESSAGE})
    done = stream.last.data
    assert done["finish_reason"] == "length"
    assert done["usage"]["prompt_tokens"] == 1001  # PROMPT_TOKENS_BASE + one message
    assert done["usage"]["completion_tokens"] == 500 + len(WORDS)
    stored = history(front, done["conversation_id"])[-1]
    assert stored["status"] == "complete"
    assert stored["meta"] == {"finish_reason": "length"}


def test_cancelling_the_reply_closes_the_upstream_request(
    fault: FaultUpstream, front: ServerProcess
) -> None:
    fault.mode = "slow"
    disconnects = fault.disconnects
    body = b"message=Tell+me+something"
    request = (
        b"POST /chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", front.port)) as sock:
        sock.sendall(request)
        raw = b""
        while raw.count(b"event: message") < 3:
            raw += sock.recv(65536)
    assert fault.wait_for(lambda f: f.disconnects > disconnects, timeout=5)
    events, _, _ = parse_sse(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[1])
    cid = events[0].data["conversation_id"]
    deadline = time.monotonic() + 5
    while len(messages := history(front, cid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert messages[1]["status"] == "interrupted"
    assert len(str(messages[1]["content"]).split()) < len(WORDS)


def test_health_shows_whether_the_upstream_answers(
    fault: FaultUpstream, front: ServerProcess, tmp_path: Path
) -> None:
    engine = httpx.get(front.url + "/health").json()["engine"]
    assert engine["status"] == "ok"
    assert engine["base_url"] == fault.url
    nowhere = live_server(
        tmp_path, "nowhere", ENGINE="openai", OPENAI_BASE_URL=free_port_url(), **TIMEOUTS
    )
    try:
        health = httpx.get(nowhere.url + "/health")
        assert health.status_code == 200  # the store is fine: the server itself is up
        assert health.json()["engine"]["status"] == "unavailable"
        stream = post_chat(nowhere.url, data={"message": "anyone?"})
        assert stream.last.data["error"]["code"] == "upstream_error"
        assert "cannot reach the upstream" in stream.last.data["error"]["message"]
    finally:
        nowhere.stop()


@pytest.mark.parametrize(("mode", "status", "code"), [
    ("status_500", 502, "upstream_error"),
    ("stall_first", 504, "upstream_timeout"),
    ("garbage", 502, "upstream_protocol_error"),
])  # fmt: skip
def test_v1_reports_upstream_faults_as_openai_errors(
    fault: FaultUpstream, front: ServerProcess, mode: str, status: int, code: str
) -> None:
    fault.mode = mode
    body = {"model": "m", "messages": [{"role": "user", "content": MESSAGE}]}
    response = httpx.post(front.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    with httpx.stream(
        "POST", front.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=10
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert '"code":"' + code + '"' in lines[-1]
    assert lines[-1] != "data: [DONE]"


def test_leaving_a_v1_stream_closes_the_upstream_request(
    fault: FaultUpstream, front: ServerProcess
) -> None:
    fault.mode = "slow"
    disconnects = fault.disconnects
    body = {"model": "m", "messages": [{"role": "user", "content": MESSAGE}], "stream": True}
    with httpx.stream("POST", front.url + "/v1/chat/completions", json=body) as streamed:
        contents: list[str] = []
        for line in streamed.iter_lines():
            if '"content":' in line:
                contents.append(line)
            if len(contents) == 3:
                break
    assert fault.wait_for(lambda f: f.disconnects > disconnects, timeout=5)
    assert metric(front, 'chatbot_sse_streams_total{outcome="interrupted"}') >= 1
