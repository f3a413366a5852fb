"""Reading one upstream response: an error status, or the reply's event stream, under deadlines.

Everything that can go wrong while reading becomes an `UpstreamError`
subclass; the engine decides what to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import httpx
import orjson

from chatbot_sse.engines._openai_wire import (
    DONE,
    error_message,
    parse_chunk,
    parse_completion,
    sse_data,
)
from chatbot_sse.engines.base import StreamResult
from chatbot_sse.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["StatusError", "read_reply", "status_error"]

ERROR_BODY_LIMIT = 4096  # bytes of an upstream error body read for its message

_HINTS = {
    401: " (check OPENAI_API_KEY)",
    403: " (check OPENAI_API_KEY)",
    404: " (check OPENAI_BASE_URL and OPENAI_MODEL)",
}


class StatusError(UpstreamError):
    """An error status from the upstream, with its `Retry-After` if it sent one."""

    def __init__(self, message: str, *, status: int, retryable: bool, retry_after: float | None):
        super().__init__(message, status=status, retryable=retryable)
        self.retry_after = retry_after


async def status_error(response: httpx.Response, *, read_within: float) -> UpstreamError:
    """The error an error status stands for; the body is read (briefly) for its message."""
    status = response.status_code
    body = b""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(read_within):
            async for part in response.aiter_bytes():
                body += part
                if len(body) >= ERROR_BODY_LIMIT:
                    break
    try:
        detail = error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        detail = body[:200].decode(errors="replace").strip() or response.reason_phrase
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        retry_after = float(response.headers.get("retry-after", ""))
    return StatusError(
        f"the upstream answered {status}: {detail}{_HINTS.get(status, '')}",
        status=status,
        retryable=status in (408, 429) or status >= 500,
        retry_after=retry_after,
    )


async def read_reply(
    response: httpx.Response,
    result: StreamResult | None,
    first_token_timeout: float,
    idle_timeout: float,
) -> AsyncGenerator[str, None]:
    """The text of each chunk of a 2xx response; fills `result`.

    Deadlines: `first_token_timeout` from now to the first text, then
    `idle_timeout` between chunks. A reply that has its finish reason and then
    goes silent is whole, even without `[DONE]`.
    """
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        # An upstream that ignores `stream: true` (some proxies do) still gives a reply.
        try:
            async with asyncio.timeout(first_token_timeout):
                body = await response.aread()
        except TimeoutError:
            raise UpstreamTimeout("the upstream's completion did not arrive in time") from None
        except httpx.HTTPError:
            raise UpstreamProtocolError("the upstream closed the connection mid-reply") from None
        delta = parse_completion(body, result)
        if result is not None:
            result.finish_reason = delta.finish_reason
        if delta.content:
            yield delta.content
        return
    if media_type != "text/event-stream":
        raise UpstreamProtocolError(
            f"the upstream answered {media_type or 'no content type'}, not an event stream",
            retryable=False,
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + first_token_timeout
    started = False
    finish: str | None = None
    eof = False
    events = sse_data(response.aiter_lines())
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await anext(events, None)
            except TimeoutError:
                if finish is not None:
                    break  # finished, then silent: the reply is whole without [DONE]
                if started:
                    what = f"no chunk from the upstream for {idle_timeout:g}s"
                else:
                    what = f"no first token from the upstream in {first_token_timeout:g}s"
                raise UpstreamTimeout(what) from None
            except (httpx.RemoteProtocolError, httpx.ReadError):
                raise UpstreamProtocolError(
                    "the upstream closed the connection mid-reply"
                ) from None
            except httpx.HTTPError as exc:
                raise UpstreamError(f"reading from the upstream failed: {exc!r}") from None
            if data is None:
                eof = True
                break
            if data.strip() == DONE:
                break
            delta = parse_chunk(data, result)
            finish = delta.finish_reason or finish
            if started:
                deadline = loop.time() + idle_timeout
            if delta.content:
                if not started:
                    started = True
                    deadline = loop.time() + idle_timeout
                yield delta.content
    finally:
        await events.aclose()
    if finish is None and eof:
        raise UpstreamProtocolError("the upstream ended the stream before finishing the reply")
    if result is not None:
        result.finish_reason = finish or "stop"
