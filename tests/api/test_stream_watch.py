"""`StreamWatch`: one sweep per event loop cuts the streams that lag or outlive their cap.

The live behaviour (a stalled client cut as `slow_reader`, then resuming) is in
tests/hardening/test_limits.py; these pin the sweep itself: what it cuts, when, what it
leaves, that it starts again after going quiet, and that it keeps nothing alive.
"""

from __future__ import annotations

import asyncio
import contextlib

from chatbot_sse.api.streaming import (
    BACKLOG_CHECK_INTERVAL,
    StreamGuard,
    WriteStop,
    stream_watch,
)


class Backlog:
    """A `FrameSource` as far as the guard looks at it: how far its reader is behind."""

    def __init__(self, waiting: int = 0) -> None:
        self.waiting = waiting

    def backlog(self) -> int:
        return self.waiting


async def _writing() -> tuple[asyncio.Task[str], WriteStop]:
    """A task standing for a response's writer, and the stop that cuts it."""
    started = asyncio.Event()
    stops: list[WriteStop] = []

    async def write() -> str:
        task = asyncio.current_task()
        assert task is not None
        stop = WriteStop(task)
        stops.append(stop)
        started.set()
        try:
            await asyncio.Event().wait()
            return "finished"
        except asyncio.CancelledError:
            if not stop.absorb():
                raise  # cancelled from outside: the test's cleanup
            return f"cut: {stop.reason}"
        finally:
            stop.writing = False

    task = asyncio.ensure_future(write())
    await started.wait()
    return task, stops[0]


async def test_a_lagging_stream_is_cut_and_one_keeping_up_is_left() -> None:
    (lagging, lag_stop), (keeping_up, up_stop) = await _writing(), await _writing()
    source = Backlog(waiting=100)
    guards = [
        StreamGuard(source, lag_stop, 1000, 0.0),
        StreamGuard(Backlog(10), up_stop, 1000, 0.0),
    ]
    watch = stream_watch()
    for guard in guards:
        watch.add(guard)
    await asyncio.sleep(BACKLOG_CHECK_INTERVAL * 1.5)
    assert not lagging.done(), "100 bytes behind with 1,000 allowed: not lagging yet"
    source.waiting = 5000
    assert await asyncio.wait_for(lagging, BACKLOG_CHECK_INTERVAL * 3) == "cut: slow_reader"
    assert not keeping_up.done()
    await _cancel(keeping_up)
    for guard in guards:
        watch.discard(guard)


async def test_a_stream_past_its_cap_is_cut_within_an_interval() -> None:
    task, stop = await _writing()
    loop = asyncio.get_running_loop()
    started = loop.time()
    guard = StreamGuard(Backlog(), stop, 0, started + 0.2)
    stream_watch().add(guard)
    assert await asyncio.wait_for(task, BACKLOG_CHECK_INTERVAL * 3) == "cut: expired"
    assert 0.2 <= loop.time() - started <= 0.2 + BACKLOG_CHECK_INTERVAL * 2


async def test_the_sweep_starts_again_after_it_went_quiet() -> None:
    watch = stream_watch()
    task, stop = await _writing()
    guard = StreamGuard(Backlog(), stop, 1000, 0.0)
    watch.add(guard)
    watch.discard(guard)  # the stream ended: nothing is left to watch, the sweep stops
    await asyncio.sleep(BACKLOG_CHECK_INTERVAL * 2.5)
    lagging = StreamGuard(Backlog(5000), stop, 1000, 0.0)  # its response holds it, as here
    watch.add(lagging)
    assert await asyncio.wait_for(task, BACKLOG_CHECK_INTERVAL * 3) == "cut: slow_reader"


async def test_the_watch_lets_go_of_streams_that_ended_or_were_cut() -> None:
    watch = stream_watch()
    ended_task, ended_stop = await _writing()
    ended = StreamGuard(Backlog(), ended_stop, 1000, 0.0)
    watch.add(ended)
    watch.discard(ended)  # what a response's `finally` does
    cut_task, cut_stop = await _writing()
    cut = StreamGuard(Backlog(5000), cut_stop, 1000, 0.0)
    watch.add(cut)  # never discarded: the sweep drops it when it cuts it
    assert await asyncio.wait_for(cut_task, BACKLOG_CHECK_INTERVAL * 3) == "cut: slow_reader"
    assert ended not in watch
    assert cut not in watch  # the watch holds nothing of them: their response's end frees them
    await _cancel(ended_task)


async def _cancel(task: asyncio.Task[str]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
