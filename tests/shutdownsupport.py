"""Raw-socket clients for the shutdown tests: the test decides when to stop reading."""

from __future__ import annotations

import socket

import httpx

from livesupport import Event, ServerProcess, Stream, parse_sse


class RawStream:
    """POST /chat on a raw socket (HTTP/1.1): the test decides when to read and when to stop."""

    def __init__(self, server: ServerProcess, message: str, conversation_id: str = "") -> None:
        body = f"message={message.replace(' ', '+')}&conversation_id={conversation_id}".encode()
        self.sock = socket.create_connection(("127.0.0.1", server.port))
        self.sock.sendall(
            b"POST /chat HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.raw = b""

    def events(self) -> list[Event]:
        """The complete events received so far."""
        payload = dechunk(self.raw)
        return parse_sse(payload[: payload.rfind(b"\n\n") + 2])[0]

    def until(self, marker: bytes, count: int = 1) -> list[Event]:
        """Read until `marker` came `count` times."""
        while self.raw.count(marker) < count:
            data = self.sock.recv(65536)
            assert data, f"server closed the stream early: {self.raw[-500:]!r}"
            self.raw += data
        return self.events()

    def to_end(self, timeout: float = 30) -> list[Event]:
        """Read to the end of the response (its last chunk) or of the connection."""
        self.sock.settimeout(timeout)
        while not self.raw.endswith(b"\r\n0\r\n\r\n"):
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            self.raw += data
        return self.events()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response, as far as it came."""
    body = raw.split(b"\r\n\r\n", 1)[1]
    payload = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        payload += rest[:size]
        if size == 0 or len(rest) < size:
            break
        body = rest[size + 2 :]
    return payload


def resume(server: ServerProcess, cid: str, last_id: str | None) -> Stream:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    url = f"{server.url}/conversations/{cid}/stream"
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        raw = response.read()
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events, comments, retry = parse_sse(raw)
        return Stream(response.status_code, response.headers, events, comments, retry, raw)
    return Stream(response.status_code, response.headers, [], [], None, raw)


def assert_acknowledged_in_history(server: ServerProcess, streams: list[Stream]) -> None:
    """Every reply whose `completed` was sent is in its conversation's history."""
    for stream in streams:
        if not stream.events or stream.last.event != "completed":
            continue
        done = stream.last.data
        url = f"{server.url}/conversations/{done['conversation_id']}/history"
        messages = httpx.get(url, timeout=10).json()["messages"]
        assert {"id": done["message_id"], "content": done["content"]}.items() <= next(
            m for m in messages if m["id"] == done["message_id"]
        ).items()
