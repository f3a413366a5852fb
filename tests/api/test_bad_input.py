"""Every kind of bad input gets a clear 4xx JSON error, and the server keeps serving."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from livesupport import ServerProcess, Stream

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}

CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("missing message (form)", {"data": {"other": "x"}}, 422, "invalid_input"),
    ("missing message (json)", {"json": {}}, 422, "invalid_input"),
    ("empty message", {"data": {"message": ""}}, 422, "invalid_input"),
    ("blank message", {"json": {"message": " \n\t "}}, 422, "invalid_input"),
    ("message is a number", {"json": {"message": 42}}, 422, "invalid_input"),
    ("message is null", {"json": {"message": None}}, 422, "invalid_input"),
    ("message is a list", {"json": {"message": ["hi"]}}, 422, "invalid_input"),
    ("json array body", {"json": ["hi"]}, 422, "invalid_input"),
    ("malformed json", {"content": b'{"message": "hi"', "headers": JSON}, 422, "invalid_input"),
    ("empty json body", {"content": b"", "headers": JSON}, 422, "invalid_input"),
    ("non-utf8 json", {"content": b'{"message": "\xff\xfe"}', "headers": JSON}, 422, "invalid_input"),
    ("lone surrogate json", {"content": b'{"message": "\\ud800"}', "headers": JSON}, 422, "invalid_input"),
    ("non-utf8 form", {"content": b"message=%FF%FE", "headers": FORM}, 422, "invalid_input"),
    ("surrogate in form", {"content": b"message=%ED%A0%80", "headers": FORM}, 422, "invalid_input"),
    ("surrogate in multipart", {"files": {"message": (None, b"\xed\xa0\x80")}}, 422, "invalid_input"),
    ("raw non-utf8 form", {"content": b"message=\xff", "headers": FORM}, 422, "invalid_input"),
    ("message too long", {"json": {"message": "a" * 10_001}}, 413, "message_too_long"),
    ("body over 1 MiB", {"content": b"message=" + b"a" * (1024 * 1024), "headers": FORM}, 413, "payload_too_large"),
    ("conversation id malformed", {"json": {"message": "hi", "conversation_id": "abc"}}, 422, "invalid_conversation_id"),
    ("conversation id wrong type", {"json": {"message": "hi", "conversation_id": 7}}, 422, "invalid_conversation_id"),
    ("conversation id path chars", {"data": {"message": "hi", "conversation_id": "../../etc/passwd"}}, 422, "invalid_conversation_id"),
    ("conversation id header chars", {"data": {"message": "hi", "conversation_id": "a\r\nSet-Cookie: x=1"}}, 422, "invalid_conversation_id"),
    ("conversation id unknown", {"data": {"message": "hi", "conversation_id": "f" * 32}}, 404, "conversation_not_found"),
    ("unsupported media type", {"content": b"message=hi", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ("no content type", {"content": b"message=hi"}, 415, "unsupported_media_type"),
    ("malformed multipart", {"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 422, "invalid_input"),
    ("file as message", {"files": {"message": ("m.txt", b"hi", "text/plain")}}, 422, "invalid_input"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "request_kwargs", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_chat_input_is_a_clear_4xx(
    server: ServerProcess,
    case: str,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = httpx.post(server.url + "/chat", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert "Traceback" not in response.text


def test_message_at_the_limit_is_accepted(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    stream = chat(server.url, json={"message": "  " + "a" * 10_000 + "  "})
    assert stream.status == 200
    assert stream.last.event == "completed"


def test_unicode_and_control_characters_round_trip(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    text = "héllo 🌍 \x00 <script>alert(1)</script> line\nbreak"
    stream = chat(server.url, json={"message": text})
    assert stream.last.event == "completed"
    cid = stream.events[0].data["conversation_id"]
    history = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
    assert history[0]["content"] == text


def test_malformed_http_does_not_hurt_the_server(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    """Garbage on the socket and a body cut short, then a normal chat still works."""
    for payload in (
        b"GARBAGE\r\n\r\n",
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"message"',
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(4096)
    stream = chat(server.url, data={"message": "still there?"})
    assert stream.last.event == "completed"
    assert httpx.get(server.url + "/health").status_code == 200
    assert "Traceback" not in server.log()
