"""A small, fast SSE load client: raw HTTP/1.1 over asyncio protocols, one callback per read.

Why not httpx: at thousands of events per second a per-chunk `await` makes the
client, not the server, the bottleneck on a 2-core machine. Here each socket
read is one `data_received` call that de-chunks the body and notes when
`event: connected`, the first and the last `event: message` arrived. Checking a
reply's content (JSON per event) happens once, after it ended, and only where
asked (`check=True`).

`chatbot-sse loadtest` drives the same closed loop as a third driver (see
`measure.loadtest_load`); this client stays for the probes and the paced run,
which need per-stream timings, and as a driver that works without it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson

__all__ = ["Reply", "closed_loop", "fetch", "parse_events", "request_bytes"]

_CONNECTED = b"event: connected"
_MESSAGE = b"event: message"
_COMPLETED = b"event: completed"


def request_bytes(host: str, port: int, message: str, close: bool = False) -> bytes:
    """`POST /chat` with a urlencoded form body; keep-alive unless `close`."""
    from urllib.parse import urlencode

    body = urlencode({"message": message}).encode()
    head = (
        f"POST /chat HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


@dataclass(slots=True)
class Reply:
    """One request's timings (seconds since `start`, on the monotonic clock) and body."""

    start: float = 0.0
    status: int = 0
    connected: float | None = None
    first_message: float | None = None
    last_message: float | None = None
    end: float | None = None
    body: bytearray = field(default_factory=bytearray)
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Status 200, body finished, and its last event is `completed`."""
        if self.error or self.status != 200 or self.end is None:
            return False
        tail = self.body.rfind(b"event: ")
        return tail >= 0 and self.body.startswith(_COMPLETED, tail)

    @property
    def events(self) -> int:
        return self.body.count(b"event: ")

    def check(self) -> str | None:
        """Full check of the wire format; None when the reply is right, else why not."""
        if not self.complete:
            return self.error or f"incomplete (status {self.status})"
        try:
            events = parse_events(bytes(self.body))
        except ValueError as exc:
            return f"malformed: {exc}"
        names = [name for name, _ in events]
        if names[0] != "connected" or names[-1] != "completed" or len(names) < 3:
            return f"wrong event sequence {names[:3]}...{names[-2:]}"
        if any(name != "message" for name in names[1:-1]):
            return "unexpected event between connected and completed"
        joined = "".join(data["content"] for _, data in events[1:-1])
        if events[-1][1].get("content") != joined:
            return "completed.content is not the message contents joined"
        return None


def parse_events(body: bytes) -> list[tuple[str, dict[str, object]]]:
    """`(event, data)` of every event in an SSE body (any line ending; comments skipped)."""
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    out: list[tuple[str, dict[str, object]]] = []
    for block in text.split(b"\n\n"):
        name, data = b"message", []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            key, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if key == b"event":
                name = value
            elif key == b"data":
                data.append(value)
        if data:
            out.append((name.decode(), orjson.loads(b"\n".join(data))))
        elif name != b"message":
            raise ValueError(f"event {name!r} without data")
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: sends a request, de-chunks its reply."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reply: Reply | None = None
        self.done: asyncio.Future[None] | None = None
        self.buf = bytearray()
        self.in_body = False
        self.chunked = False
        self.remaining = 0  # Content-Length left when not chunked
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def send(self, request: bytes, reply: Reply) -> asyncio.Future[None]:
        assert self.transport is not None
        self.reply, self.buf, self.in_body = reply, bytearray(), False
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.done

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reply is not None and self.reply.end is None:
            if not self.in_body or self.chunked or self.remaining > 0:
                self.reply.error = f"connection lost: {exc or 'closed by server'}"
            else:  # body delimited by close
                self.reply.end = time.monotonic() - self.reply.start
            self._finish()

    def _finish(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        reply = self.reply
        if reply is None or reply.end is not None:
            return
        self.buf += data
        if not self.in_body and not self._head():
            return
        before = len(reply.body)
        if self.chunked:
            finished = self._dechunk(reply.body)
        else:
            take = self.buf[: self.remaining] if self.remaining >= 0 else self.buf
            reply.body += take
            self.remaining -= len(take)
            self.buf = bytearray()
            finished = self.remaining == 0
        now = time.monotonic() - reply.start
        if len(reply.body) > before:
            body, start = reply.body, max(0, before - 20)
            if reply.connected is None and body.find(_CONNECTED, start) >= 0:
                reply.connected = now
            if body.find(_MESSAGE, start) >= 0:
                if reply.first_message is None:
                    reply.first_message = now
                reply.last_message = now
        if finished:
            reply.end = now
            if not self.keep_alive and self.transport is not None:
                self.transport.close()
            self._finish()

    def _head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        assert self.reply is not None
        lines = bytes(self.buf[:end]).split(b"\r\n")
        self.reply.status = int(lines[0].split(b" ", 2)[1])
        self.chunked, self.remaining, self.keep_alive = False, -1, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self.chunked = True
            elif name == b"content-length":
                self.remaining = int(value)
            elif name == b"connection" and value == b"close":
                self.keep_alive = False
        self.buf = self.buf[end + 4 :]
        self.in_body = True
        return True

    def _dechunk(self, out: bytearray) -> bool:
        buf, pos = self.buf, 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            if len(buf) < eol + 2 + size + 2:
                break
            if size == 0:
                self.buf = bytearray()
                return True
            out += buf[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
        self.buf = buf[pos:]
        return False


async def fetch(
    host: str,
    port: int,
    request: bytes,
    timeout_s: float,
    conn: _Connection | None = None,
) -> tuple[Reply, _Connection | None]:
    """One reply, on `conn` when it is still open, else on a new connection.

    Returns the connection when it can be reused (keep-alive), else None.
    """
    loop = asyncio.get_running_loop()
    reply = Reply(start=time.monotonic())
    try:
        if conn is None or conn.closed:
            _, conn = await loop.create_connection(_Connection, host, port)
        await asyncio.wait_for(asyncio.shield(conn.send(request, reply)), timeout_s)
    except (OSError, TimeoutError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        return reply, None
    if reply.error or conn.closed or not conn.keep_alive:
        return reply, None
    return reply, conn


async def closed_loop(
    host: str,
    port: int,
    message: str,
    concurrency: int,
    duration: float,
    timeout_s: float = 30.0,
    keep_alive: bool = True,
) -> tuple[list[Reply], float]:
    """`concurrency` users, each sending its next request when its reply ended, for `duration` s.

    Returns every reply and the elapsed wall time (until the last reply ended).
    """
    request = request_bytes(host, port, message, close=not keep_alive)
    replies: list[Reply] = []
    started = time.monotonic()
    deadline = started + duration

    async def user() -> None:
        conn: _Connection | None = None
        while time.monotonic() < deadline:
            reply, conn = await fetch(host, port, request, timeout_s, conn)
            replies.append(reply)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return replies, time.monotonic() - started
