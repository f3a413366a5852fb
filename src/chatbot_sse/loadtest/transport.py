"""A minimal HTTP/1.1 client on asyncio protocols, with keep-alive connections.

Why not httpx for the streams: measured on this 2-core machine (see
`bench/loadtest_ceiling.py`), httpx's pure-Python h11 stack spends more CPU per
received chunk than the whole SSE check, so it, not the server, becomes the
limit. Here the response is parsed by `httptools` (llhttp, in C, the parser
uvicorn itself uses) and body bytes go straight to a sink callback, without a
task switch or an intermediate queue per chunk.

Connections are kept alive and reused (`Pool`), as wrk, k6 and browsers do: a
stream on a new connection costs both sides a connect, an accept and a close,
which on a loopback benchmark is as much CPU as checking the stream. A
connection goes back to the pool only after a response that ended as HTTP
framed it and did not ask for `Connection: close`, and it is reused only while
it has been idle for less than `MAX_IDLE_S`: servers close idle connections
after a few seconds (uvicorn 5, our gunicorn configuration 2), and a request
written onto a connection the server is closing at that moment would fail
through no fault of the stream.

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

__all__ = ["MAX_IDLE_S", "Exchange", "Pool", "ResponseSink", "Target", "open_exchange"]

MAX_IDLE_S = 1.0


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
    """A connection and the request/response it carries now; `done` resolves when it is over.

    `done` gets True when the response ended as HTTP framed it, False when the
    connection closed before that (or we closed it because the sink asked to).
    With `keep_alive`, a connection whose response ended that way stays open
    (`reusable`), and `again()` sends the next request on it.
    """

    def __init__(
        self, sink: ResponseSink, request: bytes, read_pause: float, keep_alive: bool = False
    ) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._keep_alive = keep_alive
        self._lost = False
        self.idle_since = 0.0  # when the last response ended, for `Pool`
        self._start(sink, request, read_pause)

    def _start(self, sink: ResponseSink, request: bytes, read_pause: float) -> None:
        self._sink = sink
        self._request = request
        self._read_pause = read_pause
        self._headers: dict[str, str] = {}
        self._complete = False
        self._stopped = False
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        self.head_received = False

    def again(self, sink: ResponseSink, request: bytes, read_pause: float) -> None:
        """The next request on this kept-alive connection (only when `reusable`)."""
        assert self.reusable
        assert self._transport is not None
        self._start(sink, request, read_pause)
        self._transport.write(request)

    @property
    def reusable(self) -> bool:
        """Open, and its last response ended as HTTP framed it without closing."""
        return self._keep_alive and self._complete and not self._stopped and not self._lost

    # asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._complete:  # bytes while idle: no response of ours, the connection is unfit
            self.close()
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
        self._lost = True
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
    def on_message_begin(self) -> None:
        if self._complete:  # a second response to one request, in the same read: unfit
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._stopped:
            return
        self.head_received = True
        if self._sink.on_head(self._parser.get_status_code(), self._headers):
            self.close()

    def on_body(self, body: bytes) -> None:
        if not self._stopped and self._sink.on_body(body):
            self.close()

    def on_message_complete(self) -> None:
        self._complete = True
        if self._keep_alive and self._parser.should_keep_alive():
            self.idle_since = time.monotonic()
            if not self.done.done():
                self.done.set_result(True)
        else:
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


class Pool:
    """Idle kept-alive connections to one target, most recently used first."""

    def __init__(self, max_idle_s: float = MAX_IDLE_S) -> None:
        self.max_idle_s = max_idle_s
        self._idle: list[Exchange] = []
        self.opened = 0  # connections opened through `open_exchange` with this pool
        self.reused = 0

    def take(self) -> Exchange | None:
        """An idle connection still fit to carry a request; stale ones are closed."""
        now = time.monotonic()
        while self._idle:
            exchange = self._idle.pop()
            if exchange.reusable and now - exchange.idle_since < self.max_idle_s:
                return exchange
            exchange.close()
        return None

    def give(self, exchange: Exchange) -> bool:
        """Keep `exchange` for the next request if it is reusable, else close it."""
        if exchange.reusable:
            self._idle.append(exchange)
            return True
        exchange.close()
        return False

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def build_request(
    target: Target,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool = False,
) -> bytes:
    """Serialise a request once; `Connection: close` unless the connection is to be kept."""
    lines = [
        f"{method} {target.base_path}{path} HTTP/1.1",
        f"Host: {target.host_header}",
        *(() if keep_alive else ("Connection: close",)),
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
    pool: Pool | None = None,
) -> tuple[Exchange, float | None]:
    """Send `request` on an idle connection of `pool`, else on a new one (kept alive if there
    is a pool); return the exchange and the TCP(+TLS) connect time (None: reused)."""
    if pool is not None:
        idle = pool.take()
        if idle is not None:
            idle.again(sink, request, read_pause)
            pool.reused += 1
            return idle, None
        pool.opened += 1
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
        exchange = Exchange(sink, request, read_pause, keep_alive=pool is not None)
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
