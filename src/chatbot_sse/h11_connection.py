"""h11's server connection, with a streaming response's framing header added without
validating every header again.

uvicorn's h11 protocol turns `http.response.start` into an `h11.Response`, whose
constructor validates every header (a regular expression for each name and each
value). h11's `send` then decides the body's framing and, for a body of unknown
length on HTTP/1.1, rewrites the headers twice (`set_comma_header`: drop any
`Content-Length`, add `Transfer-Encoding: chunked`), validating every header
again each time. For an SSE reply's dozen headers those two passes were the
larger part of h11's work on a response's head, ~6 % of the server's CPU in a
wave of 1,000 paced replies on asyncio + h11 (py-spy, docs/bench.md).

`FramedConnection` does that common case itself: the response's headers were
validated by its constructor moments before and hold neither `Content-Length`
nor `Transfer-Encoding`, so the result is the same headers in the same order
with `Transfer-Encoding: chunked` appended (and, on a connection that will
close, its `Connection` header rewritten to `close`, a third pass in h11):
exactly what h11 would have made (a test compares the bytes and the state for
every case). The rest (HTTP/1.0, `CONNECT`, a 204/304, a framing header
present) is left to h11.

`_clean_up_response_headers_for_sending` is h11's private method; an h11 that
renamed it only loses the shortcut (`FramedConnection` is then h11's own class).
"""

from __future__ import annotations

import h11
from h11._headers import Headers, get_comma_header

__all__ = ["FramedConnection"]

_FRAMING = (b"content-length", b"transfer-encoding")
_CHUNKED = (b"Transfer-Encoding", b"transfer-encoding", b"chunked")  # as h11 writes it


class _FramedConnection(h11.Connection):
    """An `h11.Connection` for a server, whose chunked responses' heads cost one
    validation of their headers instead of three."""

    def _clean_up_response_headers_for_sending(self, response: h11.Response) -> h11.Response:
        version = self.their_http_version
        if (
            type(response) is h11.Response
            and version is not None
            and version >= b"1.1"
            and self._request_method != b"CONNECT"
            and response.status_code not in (204, 304)
        ):
            items: list[tuple[bytes, bytes, bytes]] = response.headers._full_items
            for _, name, _ in items:
                if name in _FRAMING:
                    break
            else:
                return h11.Response(
                    headers=Headers(self._chunked(response.headers, items)),
                    status_code=response.status_code,
                    http_version=response.http_version,
                    reason=response.reason,
                    _parsed=True,
                )
        return super()._clean_up_response_headers_for_sending(response)

    def _chunked(
        self, headers: Headers, items: list[tuple[bytes, bytes, bytes]]
    ) -> list[tuple[bytes, bytes, bytes]]:
        """`items` with `Transfer-Encoding: chunked` and, when the connection will close,
        `Connection: close` (in place of any `Connection` header), as h11 rewrites them."""
        if self._cstate.keep_alive:
            return [*items, _CHUNKED]
        connection = set(get_comma_header(headers, b"connection"))
        connection.discard(b"keep-alive")
        connection.add(b"close")
        kept = [item for item in items if item[1] != b"connection"]
        return [*kept, _CHUNKED, *((b"Connection", b"connection", v) for v in sorted(connection))]


def _framed_connection() -> type[h11.Connection]:
    if not hasattr(h11.Connection, "_clean_up_response_headers_for_sending") or not hasattr(
        Headers, "_full_items"
    ):
        return h11.Connection  # pragma: no cover - h11 0.16 has both
    return _FramedConnection


FramedConnection: type[h11.Connection] = _framed_connection()
