"""An SSE response written straight to ASGI: pings, coalescing, disconnects.

Three cooperating parts per stream:
- the *producer* task runs the turn and puts encoded frames on a bounded queue
  (the bound is the backpressure: a slow reader slows the producer down);
- the *writer* (this response's own task) takes frames off the queue, sends
  every frame that is ready in one `send` call, and sends a `: ping` comment
  whenever nothing was ready for `keepalive` seconds, from the very start;
- the *watcher* task waits for `http.disconnect` and cancels the producer, so
  a client that leaves stops generation at once, even while the engine is
  silent. This is why no `BaseHTTPMiddleware` may wrap this response: it
  swallows `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatbot_sse import sse

Producer = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]
"""Runs a reply, awaiting the callback with each encoded frame."""

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        producer: Producer,
        *,
        keepalive: float,
        headers: dict[str, str] | None = None,
        queue_size: int = 64,
    ) -> None:
        self.status_code = 200
        self.producer = producer
        self.keepalive = keepalive
        self.queue_size = queue_size
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.queue_size)

        async def produce() -> None:
            try:
                await self.producer(queue.put)
            finally:
                # Never blocks: on the normal path the writer is draining the queue,
                # and a cancelled producer's writer is already gone.
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)  # the end, whatever the outcome

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": SSE_HEADERS + self.extra_headers,
            }
        )
        producer = asyncio.create_task(produce())
        watcher = asyncio.create_task(self._watch(receive, producer))
        try:
            await self._write(queue, send)
        except OSError:
            pass  # the client is gone; the watcher has cancelled the producer
        finally:
            watcher.cancel()
            if not producer.done():
                producer.cancel()
            # The producer stores the partial reply when cancelled; let it finish that.
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _write(self, queue: asyncio.Queue[bytes | None], send: Send) -> None:
        keepalive = self.keepalive
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    frame = await queue.get()
            except TimeoutError:
                await send({"type": "http.response.body", "body": sse.PING, "more_body": True})
                continue
            if frame is None:
                break
            if not queue.empty():
                # Coalesce everything already produced into one write.
                frames = [frame]
                while not queue.empty():
                    pending = queue.get_nowait()
                    if pending is None:
                        await send({"type": "http.response.body", "body": b"".join(frames)})
                        return
                    frames.append(pending)
                frame = b"".join(frames)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _watch(receive: Receive, producer: asyncio.Task[None]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                producer.cancel()
                return
