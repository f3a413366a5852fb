"""uvicorn's HTTP protocol with a deadline for reading each request (slowloris).

uvicorn has no header or body timeout: a client that connects and sends
nothing, or trickles its request head or body a byte every few seconds, holds
a socket (and, once the head is in, an app task) for ever. Its keep-alive
timeout does not help either: the first byte of a request cancels it.

`RequestDeadlineProtocol` arms one timer per request, `REQUEST_READ_TIMEOUT`
seconds long, when the connection is made and whenever the connection starts
waiting for a new request; the timer is disarmed once the request's body is
complete. So the deadline covers *reading* a request only: a long SSE reply
streams for as long as it needs, and an idle keep-alive connection is still
closed by uvicorn's shorter keep-alive timeout. On expiry the client gets
`408` with the JSON error body (when no response has started on the wire) and
the connection is closed; the app, if it was waiting for the body, sees a
disconnect.

The same classes write each response's head together with its first body bytes
(`response_head`), tell a streaming response when its client leaves
(`disconnect_notice`) and let it write its body chunks straight to the socket
(`body_chunks`); on h11, a chunked response's head is validated once, not three
times (`h11_connection`).

Wired in everywhere the server is started: `chatbot-sse serve` (`make run`),
the gunicorn worker (`chatbot_sse.workers.UvicornWorker`) and, for plain
uvicorn, `--http chatbot_sse.request_deadline:RequestDeadlineProtocol`.
uvicorn builds the protocol itself with a fixed signature, so the timeout is
read from `Settings` once per process, at the first connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import h11
import orjson
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatbot_sse.body_chunks import BodyChunks, H11Chunks, HttpToolsChunks
from chatbot_sse.config import Settings
from chatbot_sse.disconnect_notice import ConnectionNotice, offer
from chatbot_sse.h11_connection import FramedConnection
from chatbot_sse.response_head import hold_head

__all__ = ["H11DeadlineProtocol", "RequestDeadlineProtocol", "request_timeout_response"]

log = logging.getLogger("uvicorn.error")

_BODY = orjson.dumps(
    {
        "error": {
            "code": "request_timeout",
            "message": "The request did not arrive in time; the connection is closed.",
        }
    }
)


def request_timeout_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole `408` answer, written straight to the transport before closing it."""
    lines = [b"HTTP/1.1 408 Request Timeout"]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/json",
        b"content-length: " + str(len(_BODY)).encode(),
        b"cache-control: no-store",
        b"x-content-type-options: nosniff",
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + _BODY


class _ReadDeadline(asyncio.Protocol):
    """The timer and what happens when it fires, and the connection's disconnect notice;
    mixed into uvicorn's protocol classes, ahead of them (its `super()` is theirs).

    `read_timeout` is `None` until the first connection of the process reads it
    from `Settings`; `0` turns the deadline off.
    """

    read_timeout: ClassVar[float | None] = None

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    flow: Any
    server_state: Any
    _deadline: asyncio.TimerHandle | None = None
    _notice: ConnectionNotice | None = None
    _chunks: ClassVar[type[BodyChunks]] = BodyChunks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._notice = ConnectionNotice(self.flow)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)
        if self._notice is not None:
            self._notice.connection_lost()

    @staticmethod
    def _timeout() -> float:
        if _ReadDeadline.read_timeout is None:
            _ReadDeadline.read_timeout = Settings().request_read_timeout
        return _ReadDeadline.read_timeout

    def _arm_read_deadline(self) -> None:
        """Start the clock for one request, unless it is already running."""
        timeout = self._timeout()
        if self._deadline is None and timeout > 0 and not self.transport.is_closing():
            self._deadline = self.loop.call_later(timeout, self._read_deadline_expired)

    def _disarm_read_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_deadline_expired(self) -> None:
        """Answer `408` if nothing of a response is on the wire yet, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(request_timeout_response(self.server_state.default_headers))
        log.debug("request_read_timeout: closing a connection whose request did not arrive")
        self.transport.close()


def _httptools_class() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
        return None

    class HttpToolsDeadlineProtocol(_ReadDeadline, HttpToolsProtocol):
        """httptools' protocol (uvicorn's `auto` choice) with the request deadline.

        httptools reports a request's progress through callbacks: the clock
        runs from the connection (or the end of the previous response) to
        `on_message_complete`. A request pipelined behind a response still in
        progress is not timed until that response ends (uvicorn stops reading
        meanwhile, so its sender could not finish anyway).
        """

        _reading = False  # between on_message_begin and on_message_complete
        _chunks = HttpToolsChunks

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            hold_head(self)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if self._notice is not None:  # each request's cycle, pipelined ones included
                offer(self, self._notice, self._chunks)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading = True
            if self.cycle is None or self.cycle.response_complete:
                self._arm_read_deadline()

        def on_message_complete(self) -> None:
            self._reading = False
            self._disarm_read_deadline()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            waits_for_a_request = self._reading or not self.pipeline
            super().on_response_complete()
            if waits_for_a_request:
                self._arm_read_deadline()

    return HttpToolsDeadlineProtocol


class H11DeadlineProtocol(_ReadDeadline, H11Protocol):
    """h11's protocol with the request deadline (uvicorn's fallback without httptools).

    h11 keeps the client's side of the exchange as a state: the clock runs
    while it is `IDLE` (waiting for a request) or `SEND_BODY`, and stops once
    the request is `DONE`.
    """

    _chunks = H11Chunks

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # The same connection as uvicorn's, whose chunked heads are validated once (see
        # `h11_connection`); made before any byte has arrived, so nothing is lost.
        size = config.h11_max_incomplete_event_size
        self.conn = FramedConnection(
            h11.SERVER, size if size is not None else DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()
        hold_head(self)
        if self._notice is not None:
            offer(self, self._notice, self._chunks)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next request's cycle
        self._follow_state()
        if self._notice is not None:
            offer(self, self._notice, self._chunks)

    def _follow_state(self) -> None:
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm_read_deadline()
        else:
            self._disarm_read_deadline()


RequestDeadlineProtocol: type[asyncio.Protocol] = _httptools_class() or H11DeadlineProtocol
"""uvicorn's `auto` protocol (httptools if installed, else h11) with the request deadline."""
