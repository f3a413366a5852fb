"""An SSE response written straight to ASGI: pings, coalescing, disconnects.

The response reads frames from a `FrameSource` and never generates anything
itself: the reply is produced elsewhere (a `ReplyHub` task, or another process
through the store's log), so a client that leaves only detaches its reader.

The request's own task writes: it takes every frame that is ready in one
write (coalescing), and sends a `: ping` comment whenever nothing came for
`keepalive` seconds, from the very start. On our server's protocol a write
goes straight to the socket (`body_chunks`) unless the socket is backed up;
elsewhere, and for the end of the response, through `send`. A client that
leaves is noticed at once, even while the engine is silent, and stops the
writing (`WriteStop`): on our server's protocol its `disconnect_notice` says
so; elsewhere one more task per connection, the *watcher*, waits for
`http.disconnect`. This is why
no `BaseHTTPMiddleware` may wrap this response: it swallows `http.disconnect`.
(A writer task of its own, awaited with the watcher, cost a task and an
`asyncio.wait` per reply: 6 % of replies/s under wrk.)

Two bounds protect the server from readers that do not keep up:
- `max_backlog`: a reader whose source has more than this many bytes waiting
  beyond what it took last (`FrameSource.backlog()`, checked every
  `BACKLOG_CHECK_INTERVAL`, and before a batch when the last `send` had to wait
  for the client) is a slow or
  stalled reader: its stream is closed without a terminal event, so the client
  can resume from its last event id;
- `max_seconds`: no connection outlives this by more than `BACKLOG_CHECK_INTERVAL`
  (a stalled send included).
Both are checked for all the loop's streams at once, by one `StreamWatch`.

A stream given a `handoff` ends when its draining worker fires it: the
writer stops, a `reconnect` event with `retry:` jittered around `retry_ms`
(so a fleet's clients do not all come back at once) goes out, and the
response completes; the client resumes elsewhere from its Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from mypy_extensions import mypyc_attr
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatbot_sse import sse
from chatbot_sse.body_chunks import BODY_CHUNKS, BodyChunks
from chatbot_sse.disconnect_notice import DISCONNECT_NOTICE, ConnectionNotice
from chatbot_sse.draining import Handoff
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.observability.logging import get_logger
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import (
    WRITER_HEARTBEAT,
    FrameWrite,
    LiveReply,
    ReplyHub,
    deleted_frame,
    end_orphaned,
    interrupted_frame,
)
from chatbot_sse.start_hook import unwrap
from chatbot_sse.stores.base import ReplyEvents, Store

log = get_logger(__name__)

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

EVENT_SCHEMA: dict[str, object] = {
    "type": "object",
    "description": "One Server-Sent Event of the stream; `data` is a JSON object.",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
"""What an event-stream response is in OpenAPI: one event, as OpenAPI 3.2's `itemSchema`
describes it (fuzzers and code generators read the schema per event, not as one string)."""

MARK_READER_INTERVAL = 1.0  # seconds between reader heartbeats in the log
LOG_WAIT_CAP = 5.0  # longest single blocking read on the log
BACKLOG_CHECK_INTERVAL = 0.5  # seconds between backlog checks of a connection
SLOW_SEND_SECONDS = 0.01  # a `send` this slow waited for the client (flow control)
WRITER_TIMEOUT = 5 * WRITER_HEARTBEAT  # no event and no writer heartbeat this long: it died


class FrameSource(Protocol):
    async def next_batch(self, patience: float) -> bytes | None:
        """Frames ready now, joined; b"" if none came within `patience` seconds; None at the end.

        Must be safe to cancel at its await (the connection may drop there).
        """

    async def close(self) -> None:
        """The connection is done with this source, whatever the reason."""

    def backlog(self) -> int:
        """Bytes produced for this reader since it last took a batch (0: nothing piles up)."""

    def ended(self) -> bool:
        """True when the batch last taken was the end: the next `next_batch` returns None.

        Lets the writer send the last frames and end the response in one `send`.
        """

    def write_through(self, chunks: BodyChunks) -> None:
        """The response's body chunks may go straight to the socket from now on: a source
        may write its frames there itself while `next_batch` waits (and count them taken)."""


class LiveSource:
    """Reads a reply generated in this process, straight from memory.

    The backlog counts what the generation produced since the last batch was
    taken, not the replay a resume starts with: catching up is not lagging.

    Waiting for the next frame is a bare future from the reply; the `patience`
    (the keepalive) is one timer per reader, re-armed only when it fires early,
    not a timer made and cancelled for every wait: a paced reply waits once per
    chunk, and a timer each time was ~1.2 us of the ~20 us a chunk costs.

    Given the server's `BodyChunks` (`write_through`), the reader is pushed to
    instead: while its task waits, it listens on the reply, and new frames are
    written to the socket by a callback (`flush`, in the loop's next `FlushRound` after the
    first frame of a step, so frames published together go out together) with
    the task left asleep. Waking a task for every chunk was the largest cost of
    a paced reply left on uvloop (docs/bench.md: -11 % CPU per paced wave). The
    task is woken only for what needs more than a write: the end of the reply
    (the response must end through `send`), a write `BodyChunks` refuses (the
    socket backed up, the client gone: `send` waits, timed, as before) and the
    keepalive, whose deadline each pushed write moves on.
    """

    def __init__(
        self, live: LiveReply, position: int, on_close: Callable[[], Awaitable[None]]
    ) -> None:
        self.live = live
        self.position = position
        self.on_close = on_close
        self.taken = live.size
        self._waiter: asyncio.Future[bool] | None = None
        self._ping_at = 0.0  # loop time at which the current wait gives up
        self._patience = 0.0  # the current wait's
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chunks: BodyChunks | None = None
        self._listening = False  # registered with the reply (it forgets us once it tells us)
        self._flush_due = False  # a `flush` is due in the loop's `FlushRound`
        self._flushes: FlushRound | None = None

    def backlog(self) -> int:
        return self.live.size - self.taken

    def ended(self) -> bool:
        return self.live.finished and self.position >= len(self.live.frames)

    def write_through(self, chunks: BodyChunks) -> None:
        self._chunks = chunks

    async def next_batch(self, patience: float) -> bytes | None:
        live = self.live
        while True:
            frames = live.frames
            end = len(frames)
            position = self.position
            if position < end:
                self.position = end
                self.taken = live.size
                return frames[position] if end - position == 1 else b"".join(frames[position:end])
            if live.finished:
                return None
            # The wait, inline: a paced reply waits once per chunk, and a coroutine of its
            # own for it was a frame made and resumed each time (2k of the ~85k instructions
            # of a paced chunk on asyncio's loop).
            loop = self._loop
            if loop is None:  # once: on Python 3.11 each look-up is a `getpid()` system call
                loop = self._loop = asyncio.get_running_loop()
            pushed = self._chunks is not None
            if pushed:
                waiter = self._waiter = loop.create_future()
                self._patience = patience
                self._listen()
            else:
                waiter = self._waiter = live.waiter(loop)
            self._ping_at = loop.time() + patience
            if self._timer is None:
                self._timer = loop.call_at(self._ping_at, self._give_up)
            try:
                if not await waiter:
                    return b""  # `patience` ran out: nothing came
            finally:
                self._waiter = None
                if pushed:
                    self._unlisten()
                else:
                    live.forget(waiter)

    def _listen(self) -> None:
        if not self._listening:
            self._listening = True
            self.live.listen(self)

    def _unlisten(self) -> None:
        if self._listening:  # the reply holds this reader while it listens: let go
            self._listening = False
            self.live.unlisten(self)

    def frames_ready(self) -> None:
        """From the reply, in the step that published a frame or finished it."""
        self._listening = False  # the reply forgot this reader as it told it
        if self.live.finished:  # the end goes through `send`: the task's to write, now
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(True)
            return
        loop = self._loop
        if not self._flush_due and loop is not None:
            self._flush_due = True
            flushes = self._flushes
            if flushes is None:
                flushes = self._flushes = flush_round(loop)
            flushes.add(self, loop)

    def flush(self) -> None:
        """Write what the reply has new while the task waits, or wake the task to do it."""
        self._flush_due = False
        waiter = self._waiter
        chunks = self._chunks
        loop = self._loop
        if waiter is None or waiter.done() or chunks is None or loop is None:
            return  # the task is awake (a ping, a cut): it takes the frames itself
        live = self.live
        frames = live.frames
        end = len(frames)
        position = self.position
        if live.finished:
            waiter.set_result(True)  # the end goes through `send`: the task's to write
            return
        if position >= end:
            self._listen()
            return
        batch = frames[position] if end - position == 1 else b"".join(frames[position:end])
        try:
            written = chunks.write(batch)
        except Exception as exc:  # as if the task's own write had raised it
            waiter.set_exception(exc)
            return
        if not written:
            waiter.set_result(True)  # through `send`, timed: a slow reader is noticed there
            return
        self.position = end
        self.taken = live.size
        self._ping_at = loop.time() + self._patience
        self._listen()

    def _give_up(self) -> None:
        self._timer = None
        waiter = self._waiter
        loop = self._loop
        if waiter is None or waiter.done() or loop is None:
            return  # not waiting now: the next wait arms the timer again
        if loop.time() >= self._ping_at:
            waiter.set_result(False)
        else:  # frames came meanwhile: this wait began later
            self._timer = loop.call_at(self._ping_at, self._give_up)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unlisten()
        await self.on_close()


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what is due (a `LiveSource`'s frames)."""


class FlushRound:
    """The pushed readers of an event loop with frames to write, flushed by one callback.

    A reader told of new frames used to schedule its own `call_soon`: a handle per
    chunk of every paced reply, which on asyncio's loop is Python (the handle, its
    context, the queue). Readers told in the same turn of the loop (the replies whose
    sleeps ended together) now share one callback, which flushes them in the order they
    were told. A reader told while the round runs goes to the next round.
    """

    __slots__ = ("_due", "_scheduled")

    def __init__(self) -> None:
        # No reference to the loop, which the registry holds weakly: a quiet round pins nothing.
        self._due: list[Flushable] = []
        self._scheduled = False

    def add(self, source: Flushable, loop: asyncio.AbstractEventLoop) -> None:
        """Flush `source` in this round, on `loop` (the running one)."""
        self._due.append(source)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run)

    def _run(self) -> None:
        due, self._due = self._due, []
        self._scheduled = False
        for source in due:
            try:
                source.flush()
            except Exception:
                # A reader's failure is its own: the others of the round are flushed all the
                # same. Left unflushed and no longer listening, it is woken by its keepalive
                # and takes its frames through its task, as an unpushed reader does.
                log.exception("flush_failed")


_flush_rounds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FlushRound] = (
    weakref.WeakKeyDictionary()
)


def flush_round(loop: asyncio.AbstractEventLoop) -> FlushRound:
    """`loop`'s `FlushRound` (one per loop: tests run apps on many)."""
    flushes = _flush_rounds.get(loop)
    if flushes is None:
        flushes = _flush_rounds[loop] = FlushRound()
    return flushes


def hub_source(hub: ReplyHub, live: LiveReply, position: int = 0) -> LiveSource:
    """A reader of a hub's reply: leaving detaches it, and the generation goes on."""

    async def detach() -> None:
        hub.detach(live)

    return LiveSource(live, position, detach)


def task_source(
    generate: Callable[[FrameWrite], Awaitable[None]], max_seconds: float = 0.0
) -> LiveSource:
    """A reply generated for this connection alone (no resume): it stops when the client leaves.

    With `max_seconds` > 0 it is cancelled with `stream_timeout` at that age.
    Built of small objects, not closures: compiled (mypyc), closures that refer to each
    other share one environment that refers back to them, a cycle per reply.
    """
    live = LiveReply("", "")
    task = asyncio.ensure_future(_generate_into(live, generate))
    if max_seconds > 0:
        timer = asyncio.get_running_loop().call_later(max_seconds, task.cancel, "stream_timeout")
        task.add_done_callback(functools.partial(_cancel_timer, timer))
    return LiveSource(live, 0, _TaskStop(task))


class _Publisher:
    """A `FrameWrite` into a `LiveReply`."""

    __slots__ = ("live",)

    def __init__(self, live: LiveReply) -> None:
        self.live = live

    async def __call__(self, frame: bytes) -> None:
        self.live.publish(frame)


async def _generate_into(
    live: LiveReply, generate: Callable[[FrameWrite], Awaitable[None]]
) -> None:
    try:
        await generate(_Publisher(live))
    finally:
        live.finish()


def _cancel_timer(timer: asyncio.TimerHandle, _: object) -> None:
    timer.cancel()


class _TaskStop:
    """Stops a connection's own generation once the connection is done with it."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    async def __call__(self) -> None:
        task = self.task
        if not task.done():
            task.cancel("interrupted")
            # Waited for, not awaited: compiled (mypyc), the CancelledError of `await task`
            # escaped the `suppress` around it and the response, so a /v1 client that left
            # was an "Exception in ASGI application", not a disconnect, and the response
            # never reported its end (tests/api/test_disconnect_notice.py).
            await asyncio.wait((task,))
        failure = None if task.cancelled() else task.exception()
        if failure is not None:  # not a stop: the generation broke, as `await task` said
            try:
                raise failure
            finally:  # a frame holding its own traceback would be a cycle
                failure = None


class LogSource:
    """Replays and follows a reply through the store's log: any worker, any instance.

    A reply whose generating process died (SIGKILL, OOM, a lost machine) has no
    terminal event and never will. When no event came for `WRITER_TIMEOUT` and
    the writer's heartbeat (`ReplyControl.writer_seen_at`) is as old, the
    follower ends the reply itself: it appends an `error` event `interrupted`
    (`finished`) to the log, so every other follower and later resume ends too.
    """

    def __init__(
        self,
        log: Store,
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
        self.progress_at = time.monotonic()  # when the last event came (or the follow began)

    async def next_batch(self, patience: float) -> bytes | None:
        if self.done:
            return None
        give_up_at = time.monotonic() + patience
        while True:
            now = time.monotonic()
            if now >= self.next_heartbeat:
                self.next_heartbeat = now + MARK_READER_INTERVAL
                with contextlib.suppress(Exception):
                    await self.log.mark_reader(self.conversation_id, self.reply_id)
            result, self.pending = self.pending, None
            if result is None:
                # Short reads: the reader's heartbeat goes on between them; the client's
                # ping only when `patience` went by without an event.
                wait = max(0.0, min(give_up_at - now, LOG_WAIT_CAP, MARK_READER_INTERVAL))
                try:
                    result = await self.log.read_events(
                        self.conversation_id, self.reply_id, self.after_seq, wait
                    )
                except StoreUnavailable as exc:
                    self.done = True
                    return self._store_failed(exc)
            if result.events:
                self.after_seq = result.events[-1][0]
                self.progress_at = time.monotonic()
                self.done = result.finished  # one snapshot: the terminal event is among these
                return b"".join(frame for _, frame in result.events)
            if result.finished or not result.exists:
                self.done = True
                return None if result.finished else await self._vanished()
            if time.monotonic() - self.progress_at >= WRITER_TIMEOUT:
                ended = await self._end_if_orphaned()
                if ended:
                    return ended
            if time.monotonic() >= give_up_at:
                return b""

    async def _vanished(self) -> bytes | None:
        """The log is gone before its end. Its conversation was deleted meanwhile (the delete
        waits for the reply to end, but this reader may not have read that end yet): say so,
        as the generating process told its own readers. Else nothing to add."""
        try:
            deleted = await self.log.get_conversation(self.conversation_id) is None
        except Exception:
            return None
        if not deleted:
            return None
        return deleted_frame(self.conversation_id, self.reply_id, self.after_seq + 1)

    async def _end_if_orphaned(self) -> bytes:
        """b"" while the writer heartbeats; else the `interrupted` event that ends the reply."""
        try:
            control = await self.log.reply_control(self.conversation_id, self.reply_id)
        except Exception:
            return b""  # cannot tell: keep following (a store failure ends it by itself)
        seen = control.writer_seen_at
        if seen is not None and time.time() - seen < WRITER_TIMEOUT:
            self.progress_at = time.monotonic() - WRITER_TIMEOUT + WRITER_HEARTBEAT
            return b""
        self.done = True
        try:
            return await end_orphaned(self.log, self.conversation_id, self.reply_id, self.after_seq)
        except Exception:  # a struggling store: this reader ends all the same
            return interrupted_frame(self.conversation_id, self.reply_id, self.after_seq + 1)

    def _store_failed(self, exc: StoreUnavailable) -> bytes:
        """The `error` event ending a follow whose store failed; the reply may still be going
        on elsewhere, so it is retryable, and has no id: a reconnect resumes where this was."""
        error = {"code": exc.code, "message": exc.message, "retryable": True}
        data = {
            "type": "error",
            "error": error,
            "conversation_id": self.conversation_id,
            "message_id": self.reply_id,
        }
        return sse.encode_unnumbered("error", data)

    async def close(self) -> None:
        """Nothing held: the generating process watches heartbeats, not connections."""

    def backlog(self) -> int:
        """Nothing piles up: a slow reader only reads the store later."""
        return 0

    def ended(self) -> bool:
        return self.done

    def write_through(self, chunks: BodyChunks) -> None:
        """Not taken: a follower's frames come from awaiting the store, in its task."""


class BytesSource:
    """Frames known in full beforehand (a reply replayed from history): one batch, then the end."""

    def __init__(self, frames: bytes) -> None:
        self.frames: bytes | None = frames

    async def next_batch(self, patience: float) -> bytes | None:
        frames, self.frames = self.frames, None
        return frames

    async def close(self) -> None:
        """Nothing held."""

    def backlog(self) -> int:
        return 0

    def ended(self) -> bool:
        return self.frames is None

    def write_through(self, chunks: BodyChunks) -> None:
        """Nothing to push: everything is in the one batch."""


class WriteStop:
    """Stops the request's task while, and only while, it writes the stream.

    The watcher (the client left) and the cuts (expiry, a slow reader, the
    worker's handoff) end the stream by cancelling the task that writes it: a
    `send` stuck on a stalled client only ends that way. `writing` turns False
    in the same step in which the writing ends, so a cancellation requested
    here is always delivered inside it, and `absorb` takes back exactly that
    one: a cancellation from outside (the server stopping) still propagates.
    """

    __slots__ = ("_task", "reason", "requested", "writing")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self._task = task
        self.writing = True
        self.requested = False
        self.reason: str | None = None  # a cut's reason; None: the client left

    def stop(self, reason: str | None = None) -> None:
        if self.writing and not self.requested:
            self.requested = True
            self.reason = reason
            self._task.cancel()

    def client_left(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled():
            watcher.exception()  # retrieved: a `receive` that failed counts as the client gone
        self.stop()

    def absorb(self) -> bool:
        """In `except CancelledError`: True if it was only this stop's (then it is taken back)."""
        return self.requested and self._task.uncancel() == 0


class StreamGuard:
    """One connection's bounds, checked by its event loop's `StreamWatch`."""

    __slots__ = ("expires_at", "max_backlog", "source", "stop")

    def __init__(
        self, source: FrameSource, stop: WriteStop, max_backlog: int, expires_at: float
    ) -> None:
        self.source = source
        self.stop = stop
        self.max_backlog = max_backlog  # 0: unbounded
        self.expires_at = expires_at  # loop time; 0: never

    def check(self, now: float) -> bool:
        """Cut the stream if it outlived its time or lets its backlog grow; False once it
        needs no more checks."""
        if 0 < self.expires_at <= now:
            self.stop.stop("expired")
            return False
        if self.max_backlog > 0 and self.source.backlog() > self.max_backlog:
            self.stop.stop("slow_reader")
            return False
        return self.stop.writing


class StreamWatch:
    """Checks every open stream of an event loop every `BACKLOG_CHECK_INTERVAL`, with one timer.

    A timer per connection (the backlog check re-armed every interval, plus one for
    its expiry) made every stream's timers a standing cost: on asyncio's loop each
    firing is Python (a `TimerHandle`, a heap that is deeper by every stream's
    timers), and a long paced reply paid for two firings a second, more than its
    chunks' own waits. One sweep for all costs a loop over the open streams. An
    expiry is therefore noticed up to one interval late; the cap it enforces is
    minutes long, and its margin over `MAX_STREAM_SECONDS` (the reply's own, exact
    limit) is larger than that.
    """

    def __init__(self) -> None:
        # No reference to the loop (the registry holds it weakly): a quiet watch pins nothing.
        # The guards are a plain set (a WeakSet cost +50k instructions per paced reply on
        # asyncio); every response discards its own in its `finally`.
        self._guards: set[StreamGuard] = set()
        self._scheduled = False

    def add(self, guard: StreamGuard) -> None:
        self._guards.add(guard)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(BACKLOG_CHECK_INTERVAL, self._sweep)

    def discard(self, guard: StreamGuard) -> None:
        self._guards.discard(guard)

    def __contains__(self, guard: StreamGuard) -> bool:
        return guard in self._guards

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for guard in list(self._guards):
            if not guard.check(now):
                self._guards.discard(guard)
        if self._guards:
            loop.call_later(BACKLOG_CHECK_INTERVAL, self._sweep)
        else:
            self._scheduled = False


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamWatch] = (
    weakref.WeakKeyDictionary()
)


def stream_watch() -> StreamWatch:
    """The running loop's `StreamWatch` (one per loop: tests run apps on many)."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = StreamWatch()
    return watch


@mypyc_attr(native_class=False)  # compiled: `media_type` stays a class attribute FastAPI reads
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
        max_backlog: int = 0,
        max_seconds: float = 0.0,
        on_close: Callable[[], Awaitable[None]] | None = None,
        handoff: Handoff | None = None,
        retry_ms: int = 1000,
    ) -> None:
        self.status_code = 200
        self.source = source
        self.keepalive = keepalive
        self.metrics = metrics
        self.prefix = prefix
        self.max_backlog = max_backlog  # 0: unbounded
        self.max_seconds = max_seconds  # 0: unbounded
        self.on_close = on_close
        self.handoff = handoff
        self.retry_ms = retry_ms
        self.extra_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.background = None
        self.pings = 0
        self.blocked = 0.0
        # why the server ended the stream early: slow_reader, expired, shutdown
        self.cut: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failed: BaseException | None = None
        try:
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": SSE_HEADERS + self.extra_headers})
        except BaseException as exc:
            failed = exc
        if failed is not None:
            # Released after the handler, not in it: compiled (mypyc), a coroutine suspended
            # in an `except` block leaves its exception current for whatever task runs
            # meanwhile, and their compiled code may raise it (docs/bench.md).
            try:
                await self._release()
                raise failed
            finally:  # as `except ... as` does: a frame holding its own traceback is a cycle
                failed = None
        send = unwrap(send)  # started: the body goes past the middlewares' start hooks
        task = asyncio.current_task()
        assert task is not None  # ASGI apps run in a task
        stop = WriteStop(task)
        extensions = scope.get("extensions")
        notice: ConnectionNotice | None = extensions.get(DISCONNECT_NOTICE) if extensions else None
        watcher = None
        if notice is not None:  # the server's protocol says when the client leaves
            notice.register(stop.stop)
        else:
            watcher = asyncio.ensure_future(self._watch(receive))
            watcher.add_done_callback(stop.client_left)
        guard = watch = None
        if self.max_seconds > 0 or self.max_backlog > 0:
            expires_at = 0.0
            if self.max_seconds > 0:
                expires_at = asyncio.get_running_loop().time() + self.max_seconds
            guard = StreamGuard(self.source, stop, self.max_backlog, expires_at)
            watch = stream_watch()
            watch.add(guard)
        unregister = None
        if self.handoff is not None:
            unregister = self.handoff.register(lambda: stop.stop("shutdown"))
        chunks: BodyChunks | None = extensions.get(BODY_CHUNKS) if extensions else None
        disconnected = False
        try:
            await self._write(send, chunks)
        except asyncio.CancelledError:
            if not stop.absorb():
                raise
            self.cut = stop.reason
            disconnected = stop.reason is None
        except OSError:
            disconnected = True  # the client vanished mid-send
        finally:
            stop.writing = False
            if unregister is not None:
                unregister()
            if watch is not None and guard is not None:
                watch.discard(guard)
            if watcher is not None:
                watcher.remove_done_callback(stop.client_left)
                watcher.cancel()
            elif notice is not None:
                notice.register(None)
            if self.cut == "shutdown" and not disconnected:
                await self._send_reconnect(send)
            await self._release()
            self.metrics.connection_ended(self.pings, self.blocked, disconnected)
            if self.cut is not None:
                # uvicorn may add "returned without completing response": that is this cut.
                log.warning("stream_cut", reason=self.cut, backlog_bytes=self.source.backlog())
                self.metrics.stream_cut(self.cut)

    async def _send_reconnect(self, send: Send) -> None:
        retry_ms = round(self.retry_ms * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
        frame = sse.encode_reconnect(retry_ms, "shutdown")
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": frame, "more_body": False})

    async def _release(self) -> None:
        try:
            await self.source.close()
        finally:
            if self.on_close is not None:
                await self.on_close()

    async def _write(self, send: Send, chunks: BodyChunks | None) -> None:
        """Send the source's batches as they come; the last ends the response.

        With the server's `chunks` (`body_chunks`), a batch goes straight to the socket
        unless the server has more to do than write it (the socket backed up, the client
        gone): then, as without it, through `send`, timed, so a slow reader is noticed.
        """
        keepalive = self.keepalive
        source = self.source
        pending = self.prefix
        max_backlog = self.max_backlog
        slow_send = False
        pushing = False
        while True:
            if slow_send and source.backlog() > max_backlog:
                self.cut = "slow_reader"  # the last send was slow: end cleanly, it may resume
                break
            batch = await source.next_batch(keepalive)
            if batch is None:
                break
            if not batch:
                self.pings += 1
                batch = sse.PING
            if pending:
                batch, pending = pending + batch, b""
            if source.ended():  # the last frames end the response in the same write
                pending = batch
                break
            if chunks is not None and chunks.write(batch):
                slow_send = False
                if not pushing:  # the prefix and the head are out: the source may write too
                    pushing = True
                    source.write_through(chunks)
                continue
            started = time.perf_counter()
            await send({"type": "http.response.body", "body": batch, "more_body": True})
            took = time.perf_counter() - started
            self.blocked += took
            # Only a reader that made us wait is judged by what piled up meanwhile: a burst
            # the engine produced while this loop was busy is not the reader's doing.
            slow_send = max_backlog > 0 and took >= SLOW_SEND_SECONDS
        if chunks is not None:
            await chunks.end(send, pending)
        else:
            await send({"type": "http.response.body", "body": pending, "more_body": False})

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
