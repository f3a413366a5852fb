"""`WriteStop`: the stream's own cancellations are taken back, anyone else's propagate."""

from __future__ import annotations

import asyncio

import pytest

from chatbot_sse.api.streaming import WriteStop


async def _writing(started: asyncio.Event, stops: list[WriteStop]) -> str:
    """Stands for `EventStreamResponse.__call__`: writes until stopped, then cleans up."""
    task = asyncio.current_task()
    assert task is not None
    stop = WriteStop(task)
    stops.append(stop)
    try:
        started.set()
        await asyncio.Event().wait()  # a `send` stuck on a stalled client
        return "finished"
    except asyncio.CancelledError:
        if not stop.absorb():
            raise
        await asyncio.sleep(0)  # cleanup awaits must not be cancelled again
        return f"stopped: {stop.reason}"
    finally:
        stop.writing = False


async def _started() -> tuple[asyncio.Task[str], WriteStop]:
    started, stops = asyncio.Event(), []
    task = asyncio.ensure_future(_writing(started, stops))
    await started.wait()
    return task, stops[0]


async def test_a_cut_is_taken_back_and_its_reason_kept() -> None:
    task, stop = await _started()
    stop.stop("slow_reader")
    stop.stop("expired")  # a second stop changes nothing
    assert await task == "stopped: slow_reader"
    assert task.cancelling() == 0


async def test_a_cancellation_from_outside_propagates() -> None:
    task, _ = await _started()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_ours_and_an_outside_one_together_still_propagate() -> None:
    task, stop = await _started()
    stop.stop()  # the client left...
    task.cancel()  # ...as the server shut down
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nothing_is_cancelled_once_the_writing_ended() -> None:
    async def ended() -> WriteStop:
        task = asyncio.current_task()
        assert task is not None
        stop = WriteStop(task)
        stop.writing = False
        stop.stop("expired")
        await asyncio.sleep(0)  # would raise CancelledError had it cancelled
        return stop

    stop = await asyncio.ensure_future(ended())
    assert not stop.requested
