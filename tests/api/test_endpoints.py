"""The other endpoints: health, metrics, history errors, the page and the docs."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from livesupport import ServerProcess, Stream


def test_health_reports_store_and_engine(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["store"]["backend"] == "sqlite"
    assert body["store"]["status"] == "ok"
    assert body["engine"]["name"] == "simulated"


def test_metrics_count_streams_and_requests(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    def sample(text: str, name: str) -> float:
        """The value of one sample line, `name` including its labels."""
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
        return float(values.get(name, 0.0))

    before = httpx.get(server.url + "/metrics").text
    stream = chat(server.url, data={"message": "Tell me a story"})
    after = httpx.get(server.url + "/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    completed = 'chatbot_sse_streams_total{outcome="completed"}'
    assert sample(text, completed) == sample(before, completed) + 1
    chunks = "chatbot_sse_chunks_sent_total"
    assert sample(text, chunks) == sample(before, chunks) + len(stream.of("message"))
    assert "chatbot_sse_time_to_first_chunk_seconds_bucket" in text
    assert "chatbot_sse_stream_duration_seconds_count" in text
    assert "chatbot_sse_active_streams 0.0" in text
    assert 'chatbot_sse_http_requests_total{method="POST",route="/chat",status="200"}' in text


def test_history_of_unknown_conversation_is_404(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/conversations/{'0' * 32}/history")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"


def test_history_of_malformed_id_is_422(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/conversations/not-an-id/history")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_conversation_id"


def test_page_and_docs_are_served(server: ServerProcess) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in page.headers
    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/chat" in schema["paths"]
    assert "/conversations/{conversation_id}/history" in schema["paths"]


def test_head_answers_wherever_get_serves_a_document(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    """Load balancers probe with HEAD: the GET's status and headers, no body."""
    stream = chat(server.url, data={"message": "hello"})
    cid = stream.events[0].data["conversation_id"]
    for path in ("/health", "/", "/metrics", f"/conversations/{cid}/history", "/v1/models"):
        got = httpx.get(server.url + path)
        head = httpx.head(server.url + path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert httpx.head(server.url + "/conversations/" + "f" * 32 + "/history").status_code == 404
    streams = httpx.head(f"{server.url}/conversations/{cid}/stream")  # a stream has no HEAD
    assert streams.status_code == 405
    schema = httpx.get(server.url + "/openapi.json").json()
    assert all("head" not in operations for operations in schema["paths"].values())


def test_unknown_route_and_method_use_the_error_shape(server: ServerProcess) -> None:
    missing = httpx.get(server.url + "/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(server.url + "/chat")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_request_id_is_echoed(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = httpx.get(server.url + "/health").headers["x-request-id"]
    assert len(generated) == 16
