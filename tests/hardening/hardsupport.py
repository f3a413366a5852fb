"""Helpers for the hardening tests: keys, raw held-open streams, metrics and log lines."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx

from livesupport import Event, ServerProcess, parse_sse

KEY_A = "key-alpha-7d1c0e9b4f2a"
KEY_B = "key-bravo-93ac51e0d6b8"
KEYS = f"{KEY_A}, {KEY_B}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def open_stream(
    server: ServerProcess,
    message: str,
    headers: dict[str, str] | None = None,
    rcvbuf: int | None = None,
) -> socket.socket:
    """POST /chat on a raw socket, so the test decides when (and whether) to read or leave."""
    body = json.dumps({"message": message}).encode()
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    sock.sendall(
        b"POST /chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
    )
    return sock


def read_head(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes]:
    """The status and what came after the header block (the stream has started)."""
    sock.settimeout(timeout)
    raw = b""
    while b"\r\n\r\n" not in raw:
        data = sock.recv(65536)
        assert data, "closed before the response head"
        raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def read_to_end(sock: socket.socket, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def dechunk(body: bytes) -> bytes:
    """Undo chunked transfer encoding as far as it is complete."""
    payload = b""
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        payload += rest[:size]
        if size == 0 or len(rest) < size + 2:
            break
        body = rest[size + 2 :]
    return payload


def complete_events(payload: bytes) -> list[Event]:
    return parse_sse(payload[: payload.rfind(b"\n\n") + 2])[0]


def metric(server: ServerProcess, sample: str, headers: dict[str, str] | None = None) -> float:
    text = httpx.get(server.url + "/metrics", headers=headers or {}).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_until(condition: Any, timeout: float = 10, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    records = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
