"""CORS: an exact allowlist, preflights answered, never a wildcard; security headers everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hardsupport import KEY_A, KEYS, bearer

from livesupport import ServerProcess, post_chat

ALLOWED = "https://chat.example.com"
OTHER = "https://evil.example.net"


@pytest.fixture(scope="module")
def cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("cors")
    server = ServerProcess(
        {
            "STORE_URL": f"sqlite:///{tmp}/chat.db",
            "RESPONSE_DELAY": "0",
            "TOKEN_DELAY": "0",
            "API_KEYS": KEYS,
            "CORS_ORIGINS": f"{ALLOWED}, https://other-app.example.com",
        }
    )
    server.log_path = tmp / "server.log"
    server.start()
    yield server
    server.stop()


def preflight(server: ServerProcess, origin: str, headers: str) -> httpx.Response:
    return httpx.options(
        server.url + "/chat",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def test_preflight_of_an_allowed_origin(cors: ServerProcess) -> None:
    wanted = "authorization, x-api-key, idempotency-key, last-event-id, content-type"
    response = preflight(cors, ALLOWED, wanted)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in response.headers
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {h.strip() for h in wanted.split(",")} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "origin" in response.headers["vary"].lower()


def test_preflight_of_another_origin_is_refused(cors: ServerProcess) -> None:
    response = preflight(cors, OTHER, "authorization")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_actual_requests_get_cors_headers_only_for_allowed_origins(cors: ServerProcess) -> None:
    stream = post_chat(
        cors.url, data={"message": "Hello"}, headers={**bearer(KEY_A), "Origin": ALLOWED}
    )
    assert stream.status == 200
    assert stream.headers["access-control-allow-origin"] == ALLOWED
    assert "x-conversation-id" in stream.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-credentials" not in stream.headers
    assert stream.last.event == "completed"  # CORS does not buffer or break the stream
    other = httpx.get(cors.url + "/health", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in other.headers
    # A 401 is readable by the allowed page (it can tell the user to set a key).
    denied = httpx.get(cors.url + "/metrics", headers={"Origin": ALLOWED})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == ALLOWED


def test_no_cors_headers_by_default(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/health", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("GET", "/health", False),
        ("GET", "/", False),
        ("GET", "/metrics", True),
        ("GET", "/metrics", False),  # 401
        ("GET", "/nowhere", True),  # 404
        ("GET", f"/conversations/{'0' * 32}/history", True),
    ],
)
def test_security_headers_on_every_response(
    cors: ServerProcess, method: str, path: str, key: bool
) -> None:
    response = httpx.request(method, cors.url + path, headers=bearer(KEY_A) if key else {})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    if response.headers["content-type"].startswith("application/json"):
        assert response.headers["cache-control"] == "no-store"


def test_security_headers_on_streams_and_the_page(cors: ServerProcess) -> None:
    stream = post_chat(cors.url, data={"message": "Hello"}, headers=bearer(KEY_A))
    assert stream.headers["x-content-type-options"] == "nosniff"
    assert stream.headers["x-frame-options"] == "DENY"
    assert stream.headers["cache-control"] == "no-cache"  # the stream's own, not replaced
    page = httpx.get(cors.url + "/")
    assert page.headers.get_list("x-content-type-options") == ["nosniff"]  # not twice
