"""An SSE response written straight to ASGI: pings, coalescing, disconnects.

The response reads frames from a `FrameSource` and never generates anything
itself: the reply is produced elsewhere (a `ReplyHub` task, or another process
through the store's log), so a client that leaves only detaches its reader.

Two tasks per connection:
- the *writer* takes every frame that is ready in one `send` (coalescing), and
  sends a `: ping` comment whenever nothing came for `keepalive` seconds, from
  the very start;
- the *watcher* waits for `http.disconnect`, so a client that leaves is noticed
  at once, even while the engine is silent. This is why no
  `BaseHTTPMiddleware` may wrap this response: it swallows `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatbot_sse import sse
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import Generate, LiveReply, ReplyHub
from chatbot_sse.stores.base import ReplyEvents, ReplyLog

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

MARK_READER_INTERVAL = 1.0  # seconds between reader heartbeats in the log
LOG_WAIT_CAP = 5.0  # longest single blocking read on the log


class FrameSource(Protocol):
    async def next_batch(self, patience: float) -> bytes | None:
        """Frames ready now, joined; b"" if none came within `patience` seconds; None at the end.

        Must be safe to cancel at its await (the connection may drop there).
        """

    async def close(self) -> None:
        """The connection is done with this source, whatever the reason."""


class LiveSource:
    """Reads a reply generated in this process, straight from memory."""

    def __init__(
        self, live: LiveReply, position: int, on_close: Callable[[], Awaitable[None]]
    ) -> None:
        self.live = live
        self.position = position
        self.on_close = on_close

    async def next_batch(self, patience: float) -> bytes | None:
        live = self.live
        while True:
            frames = live.frames
            end = len(frames)
            if self.position < end:
                start, self.position = self.position, end
                return frames[start] if end - start == 1 else b"".join(frames[start:end])
            if live.finished:
                return None
            if not await live.wait_beyond(self.position, patience):
                return b""

    async def close(self) -> None:
        await self.on_close()


def hub_source(hub: ReplyHub, live: LiveReply, position: int = 0) -> LiveSource:
    """A reader of a hub's reply: leaving detaches it, and the generation goes on."""

    async def detach() -> None:
        hub.detach(live)

    return LiveSource(live, position, detach)


def task_source(generate: Generate) -> LiveSource:
    """A reply generated for this connection alone (no resume): it stops when the client leaves."""
    live = LiveReply("", "")

    async def write(frame: bytes) -> None:
        live.publish(frame)

    async def run() -> None:
        try:
            await generate(write)
        finally:
            live.finish()

    task = asyncio.ensure_future(run())

    async def stop() -> None:
        if not task.done():
            task.cancel("interrupted")
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return LiveSource(live, 0, stop)


class LogSource:
    """Replays and follows a reply through the store's log: any worker, any instance."""

    def __init__(
        self,
        log: ReplyLog,
        conversation_id: str,
        reply_id: str,
        after_seq: int,
        first: ReplyEvents | None = None,
    ) -> None:
        self.log = log
        self.conversation_id = conversation_id
        self.reply_id = reply_id
        self.after_seq = after_seq
        self.pending = first
        self.done = False
        self.next_heartbeat = 0.0

    async def next_batch(self, patience: float) -> bytes | None:
        if self.done:
            return None
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + MARK_READER_INTERVAL
            with contextlib.suppress(Exception):
                await self.log.mark_reader(self.conversation_id, self.reply_id)
        result, self.pending = self.pending, None
        if result is None:
            wait = min(patience, LOG_WAIT_CAP, MARK_READER_INTERVAL)
            result = await self.log.read_events(
                self.conversation_id, self.reply_id, self.after_seq, wait
            )
        if result.events:
            self.after_seq = result.events[-1][0]
            return b"".join(frame for _, frame in result.events)
        if result.finished or not result.exists:
            self.done = True
            return None
        return b""

    async def close(self) -> None:
        """Nothing held: the generating process watches heartbeats, not connections."""


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        source: FrameSource,
        *,
        keepalive: float,
        metrics: Metrics,
        headers: dict[str, str] | None = None,
        prefix: bytes = b"",
    ) -> None:
        self.status_code = 200
        self.source = source
        self.keepalive = keepalive
        self.metrics = metrics
        self.prefix = prefix
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.background = None
        self.pings = 0
        self.blocked = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200}
        await send({**start, "headers": SSE_HEADERS + self.extra_headers})
        writer = asyncio.ensure_future(self._write(send))
        watcher = asyncio.ensure_future(self._watch(receive))
        disconnected = False
        try:
            await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
            disconnected = watcher.done() and not writer.done()
        finally:
            for task in (writer, watcher):
                task.cancel()
            for task in (writer, watcher):
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await task
                    except OSError:
                        disconnected = True  # the client vanished mid-send
            await self.source.close()
            self.metrics.connection_ended(self.pings, self.blocked, disconnected)

    async def _write(self, send: Send) -> None:
        keepalive = self.keepalive
        source = self.source
        pending = self.prefix
        while True:
            batch = await source.next_batch(keepalive)
            if batch is None:
                break
            if not batch:
                self.pings += 1
                batch = sse.PING
            if pending:
                batch, pending = pending + batch, b""
            started = time.perf_counter()
            await send({"type": "http.response.body", "body": batch, "more_body": True})
            self.blocked += time.perf_counter() - started
        await send({"type": "http.response.body", "body": pending, "more_body": False})

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
