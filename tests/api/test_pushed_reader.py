"""A reader of a reply in this process is pushed to: its frames are written while its task sleeps.

On our server's protocol an `EventStreamResponse` reading a `LiveSource` writes
the reply's frames from the step that published them (`LiveSource.flush`),
not by waking its task for each. Here the response runs on uvicorn's own h11
request cycle, writing to a transport that keeps each write (`cyclesupport`),
and the test publishes frames into the `LiveReply` itself. What must hold, as
it did when the task wrote every frame: every frame reaches the socket once,
in order, framed as uvicorn frames it, promptly; frames published in one step
go out in one write; several readers of one reply are each pushed to; a
backed-up socket is waited for by the task through `send` (timed, so a slow
reader is still cut), and pushing resumes after it; a reader that leaves
is let go by the reply; the keepalive counts from the last frame written; the
end of the reply ends the response through `send`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
from starlette.types import Message

from chatbot_sse import sse
from chatbot_sse.api.streaming import EventStreamResponse, FlushRound, LiveSource
from chatbot_sse.body_chunks import BODY_CHUNKS, H11Chunks
from chatbot_sse.disconnect_notice import DISCONNECT_NOTICE, ConnectionNotice
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import LiveReply
from cyclesupport import Wire, h11_cycle


def frame(n: int) -> bytes:
    return f'id: r:{n}\nevent: message\ndata: {{"n": {n}}}\n\n'.encode()


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


async def nothing() -> None:
    """A source's `on_close` with nothing to release."""


@dataclass
class Served:
    """One response reading `live`, served on its own h11 request cycle."""

    live: LiveReply
    wire: Wire
    cycle: Any
    notice: ConnectionNotice
    source: LiveSource
    response: EventStreamResponse
    task: asyncio.Task[None]
    sends: list[Message] = field(default_factory=list)

    def body(self) -> list[bytes]:
        """The writes after the head."""
        return self.wire.writes[1:]

    async def settle(self) -> None:
        """Let every callback and task step that is due run."""
        for _ in range(5):
            await asyncio.sleep(0)

    def leave(self) -> None:
        """The client goes away, as our protocol says it: the cycle and the notice."""
        self.cycle.disconnected = True
        self.notice.connection_lost()


async def serve(live: LiveReply, position: int = 0, keepalive: float = 30.0) -> Served:
    wire = Wire()
    cycle, _ = h11_cycle(wire)
    notice = ConnectionNotice(cycle.flow)
    source = LiveSource(live, position, nothing)
    response = EventStreamResponse(source, keepalive=keepalive, metrics=Metrics())
    sends: list[Message] = []

    async def send(message: Message) -> None:
        sends.append(message)
        await cycle.send(message)

    async def receive() -> Message:  # pragma: no cover - the notice says when the client leaves
        raise AssertionError("the response waits for the notice, not for receive()")

    scope = {
        "type": "http",
        "extensions": {BODY_CHUNKS: H11Chunks(cycle), DISCONNECT_NOTICE: notice},
    }
    task = asyncio.ensure_future(response(scope, receive, send))
    served = Served(live, wire, cycle, notice, source, response, task, sends)
    await served.settle()
    return served


async def pushing(live: LiveReply, position: int = 0, keepalive: float = 30.0) -> Served:
    """A response whose head and first frame went out the usual way, now pushed to."""
    first = len(live.frames)
    live.publish(frame(first))
    served = await serve(live, position, keepalive)
    assert served.body()[-1] == chunk(b"".join(live.frames[position:]))
    return served


@pytest.fixture
async def live() -> AsyncIterator[LiveReply]:
    reply = LiveReply("c", "r")
    yield reply
    reply.finish()


async def test_frames_go_out_as_published_with_the_task_asleep(live: LiveReply) -> None:
    served = await pushing(live)
    waiting = served.source._waiter
    assert waiting is not None
    assert not waiting.done()
    for n in (1, 2, 3):
        live.publish(frame(n))
        await served.settle()
        assert served.body()[-1] == chunk(frame(n))
    # One wait of the task spans the three frames: nothing woke it.
    assert served.source._waiter is waiting
    assert not waiting.done()
    live.publish(frame(4))
    live.publish(frame(5))  # in the same step: together
    await served.settle()
    assert served.body()[-1] == chunk(frame(4) + frame(5))
    assert served.source.backlog() == 0
    body_sends = [m for m in served.sends if m["type"] == "http.response.body"]
    assert body_sends == [], "pushed frames went through `send`"

    live.publish(frame(6))
    live.finish()  # the last frame and the end in one step: the task ends the response
    await asyncio.wait_for(served.task, 5)
    assert served.body()[-1] == chunk(frame(6)) + b"0\r\n\r\n"
    assert served.sends[-1] == {"type": "http.response.body", "body": frame(6), "more_body": False}
    assert served.cycle.conn.our_state is h11.DONE
    assert live._listeners == []


async def test_every_reader_of_a_reply_is_pushed_to(live: LiveReply) -> None:
    first = await pushing(live)
    second = await pushing(live, position=1)  # a resume on this worker: from frame 1 on
    for n in range(2, 6):
        live.publish(frame(n))
        await first.settle()
    assert len(live._listeners) == 2
    expected = b"".join(frame(n) for n in range(6))
    for served in (first, second):
        payload = b"".join(w.split(b"\r\n", 1)[1][:-2] for w in served.body())
        assert payload == expected[len(frame(0)) if served is second else 0 :]
    live.finish()
    await asyncio.wait_for(asyncio.gather(first.task, second.task), 5)
    for served in (first, second):
        assert served.body()[-1] == b"0\r\n\r\n"


async def test_a_backed_up_socket_is_waited_for_by_the_task_then_pushing_resumes(
    live: LiveReply,
) -> None:
    served = await pushing(live)
    served.cycle.flow.pause_writing()
    live.publish(frame(1))
    await served.settle()
    writes = len(served.wire.writes)
    live.publish(frame(2))
    await served.settle()
    # The task took frame 1 and waits in `send` for the socket, as before pushing: timed.
    assert len(served.wire.writes) == writes
    assert [m["body"] for m in served.sends if m["type"] == "http.response.body"] == [frame(1)]
    assert served.source.backlog() == len(frame(2))  # piling up, for the slow-reader cut
    assert not served.task.done()
    served.cycle.flow.resume_writing()
    await served.settle()
    assert served.response.blocked > 0
    payload = [w.split(b"\r\n", 1)[1][:-2] for w in served.body()]
    assert payload == [frame(0), frame(1), frame(2)]
    waiting = served.source._waiter
    live.publish(frame(3))
    await served.settle()
    assert served.body()[-1] == chunk(frame(3))
    assert served.source._waiter is waiting, "not pushed to after the socket drained"
    assert len(served.sends) == 2  # the start, frame 1


async def test_a_reader_that_leaves_is_let_go(live: LiveReply) -> None:
    served = await pushing(live)
    live.publish(frame(1))
    await served.settle()
    served.leave()
    await asyncio.wait_for(served.task, 5)
    assert live._listeners == []
    writes = len(served.wire.writes)
    live.publish(frame(2))  # the reply goes on (its hub keeps it for a resume)
    await served.settle()
    assert len(served.wire.writes) == writes
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what only the collector could free stays in gc.garbage
    try:  # nothing of the reader is left in a cycle, nor held by the reply
        del served
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (LiveSource, EventStreamResponse))]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_a_reader_that_leaves_while_a_write_is_due_writes_nothing(live: LiveReply) -> None:
    served = await pushing(live)
    live.publish(frame(1))  # its write is scheduled for the next step ...
    served.leave()  # ... and the client leaves in this one
    await asyncio.wait_for(served.task, 5)
    await served.settle()
    assert chunk(frame(1)) not in served.body()
    assert live._listeners == []


async def test_the_keepalive_counts_from_the_last_frame_pushed(live: LiveReply) -> None:
    served = await pushing(live, keepalive=0.3)
    for n in range(1, 13):  # 0.6 s of frames, 50 ms apart: no silence of 0.3 s
        live.publish(frame(n))
        await asyncio.sleep(0.05)
    assert sse.PING not in b"".join(served.body())
    assert served.response.pings == 0
    await asyncio.sleep(0.8)  # silence: pings, one per keepalive
    assert served.response.pings >= 1
    assert chunk(sse.PING) in served.body()
    live.publish(frame(13))  # and pushing goes on after a ping
    waiting = served.source._waiter
    await served.settle()
    assert served.body()[-1] == chunk(frame(13))
    assert served.source._waiter is waiting


async def test_readers_told_in_one_step_are_flushed_by_one_callback_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replies whose chunks come in the same turn of the loop (their sleeps ended together)
    share one flush callback (`FlushRound`): a `call_soon` per chunk of every paced reply was
    Python on asyncio's loop. Each reader still gets its own frames, in one write each."""
    replies = [LiveReply(f"c{n}", f"r{n}") for n in range(3)]
    served = [await pushing(reply) for reply in replies]
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    call_soon = loop.call_soon

    def counting(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(getattr(callback, "__qualname__", callback))
        return call_soon(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", counting)
    for reply in reversed(replies):
        reply.publish(frame(1))
    replies[0].publish(frame(2))  # the same reader again in the same step: one write
    assert scheduled == ["FlushRound._run"]
    monkeypatch.undo()
    await served[0].settle()
    for one in served:
        assert one.body()[-1] == chunk(b"".join(one.live.frames[1:]))
    assert served[0].body()[-1] == chunk(frame(1) + frame(2))
    for reply in replies:
        reply.finish()
    await asyncio.wait_for(asyncio.gather(*(one.task for one in served)), 5)


async def test_a_reader_told_while_its_round_runs_is_flushed_in_the_next() -> None:
    loop = asyncio.get_running_loop()
    flushes = FlushRound()
    flushed: list[str] = []

    class Reader:
        def __init__(self, name: str, then: Reader | None = None) -> None:
            self.name, self.then = name, then

        def flush(self) -> None:
            flushed.append(self.name)
            if self.then is not None:
                flushes.add(self.then, loop)

    late = Reader("late")
    flushes.add(Reader("first", then=late), loop)
    flushes.add(Reader("second"), loop)
    assert flushed == []
    await asyncio.sleep(0)
    assert flushed == ["first", "second"]  # in the order told; `late` waits for its round
    await asyncio.sleep(0)
    assert flushed == ["first", "second", "late"]


async def test_a_reader_whose_flush_fails_leaves_the_rest_of_its_round_flushed() -> None:
    loop = asyncio.get_running_loop()
    flushes = FlushRound()
    flushed: list[str] = []

    class Reader:
        def __init__(self, name: str) -> None:
            self.name = name

        def flush(self) -> None:
            if self.name == "broken":
                raise RuntimeError("a bug in one reader")
            flushed.append(self.name)

    for name in ("first", "broken", "last"):
        flushes.add(Reader(name), loop)
    await asyncio.sleep(0)
    assert flushed == ["first", "last"]
    flushes.add(Reader("next"), loop)  # the round is not left stuck: the next one runs
    await asyncio.sleep(0)
    assert flushed == ["first", "last", "next"]
