"""A minimal HTTP/1.1 client on asyncio protocols: one request per connection.

Why not httpx for the streams: measured on this 2-core machine (see
`bench/loadtest_ceiling.py`), httpx's pure-Python h11 stack spends more CPU per
received chunk than the whole SSE check, so it, not the server, becomes the
limit. Here the response is parsed by `httptools` (llhttp, in C, the parser
uvicorn itself uses) and body bytes go straight to a sink callback, without a
task switch or an intermediate queue per chunk.

Policy (what a stream means, what counts as failure) lives in `client.py`;
this module only moves bytes. httpx is still used for the few plain requests
(history, metrics) where convenience matters more than speed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Exchange", "ResponseSink", "Target", "open_exchange"]


class ResponseSink(Protocol):
    """Receives one response. Returning True from a callback closes the connection."""

    def on_head(self, status: int, headers: dict[str, str]) -> bool: ...

    def on_body(self, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is: parsed and resolved once, shared by every stream."""

    scheme: str
    host: str
    port: int
    base_path: str
    family: int
    sockaddr: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
    ssl_context: ssl.SSLContext | None

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.base_path}"

    @classmethod
    async def resolve(cls, url: str) -> Target:
        """Parse `url` and resolve its host once (2,000 streams must not mean 2,000 lookups)."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
        if not infos:
            raise OSError(f"cannot resolve {parts.hostname!r}")
        family, _, _, _, sockaddr = infos[0]
        ctx = ssl.create_default_context() if parts.scheme == "https" else None
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port,
            base_path=parts.path.rstrip("/"),
            family=family,
            sockaddr=sockaddr,
            ssl_context=ctx,
        )


class Exchange(asyncio.Protocol):
    """One request/response on its own connection; `done` resolves when it is over.

    `done` gets True when the response ended as HTTP framed it, False when the
    connection closed before that (or we closed it because the sink asked to).
    """

    def __init__(self, sink: ResponseSink, request: bytes, read_pause: float) -> None:
        self._sink = sink
        self._request = request
        self._read_pause = read_pause
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._transport: asyncio.Transport | None = None
        self._complete = False
        self._stopped = False
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self.head_received = False

    # asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            self.close()
            return
        if self._read_pause and self._transport is not None and not self._stopped:
            self._transport.pause_reading()
            asyncio.get_running_loop().call_later(self._read_pause, self._resume)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and not self._stopped and not self._complete:
            if exc is not None:
                self.error = exc
            elif not self.head_received or self._framed():
                # EOF ends only unframed bodies; here the server went away mid-response.
                self.error = ConnectionResetError("connection closed by the server")
        if not self.done.done():
            self.done.set_result(self._complete)

    def _framed(self) -> bool:
        h = self._headers
        return "content-length" in h or "chunked" in h.get("transfer-encoding", "").lower()

    # httptools callbacks ----------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_received = True
        if self._sink.on_head(self._parser.get_status_code(), self._headers):
            self.close()

    def on_body(self, body: bytes) -> None:
        if not self._stopped and self._sink.on_body(body):
            self.close()

    def on_message_complete(self) -> None:
        self._complete = True
        self.close()

    # control ----------------------------------------------------------------
    def _resume(self) -> None:
        if self._transport is not None and not self._stopped:
            self._transport.resume_reading()

    def close(self) -> None:
        """Stop reading and close the connection (a client going away, as the server sees it)."""
        self._stopped = True
        if self._transport is not None:
            self._transport.close()
        if not self.done.done():
            self.done.set_result(self._complete)


def build_request(
    target: Target, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    """Serialise a request once; `Connection: close` since each stream has its own socket."""
    lines = [
        f"{method} {target.base_path}{path} HTTP/1.1",
        f"Host: {target.host_header}",
        "Connection: close",
        "User-Agent: chatbot-sse-loadtest",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def open_exchange(
    target: Target,
    request: bytes,
    sink: ResponseSink,
    *,
    read_pause: float = 0.0,
    rcvbuf: int | None = None,
) -> tuple[Exchange, float]:
    """Connect, send `request`, and return the exchange and the TCP(+TLS) connect time."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            # A small receive window makes a slow reader push back on the server for real.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        t0 = time.perf_counter()
        await loop.sock_connect(sock, target.sockaddr)
        exchange = Exchange(sink, request, read_pause)
        await loop.create_connection(
            lambda: exchange,
            sock=sock,
            ssl=target.ssl_context,
            server_hostname=target.host if target.ssl_context else None,
        )
        return exchange, time.perf_counter() - t0
    except BaseException:
        sock.close()
        raise
