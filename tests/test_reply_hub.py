"""The reply hub's own guarantees, on the memory store: no live server needed to see them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from chatbot_sse import sse
from chatbot_sse.api.chat import encoded_turn
from chatbot_sse.api.streaming import LiveSource
from chatbot_sse.domain import Message, MessageStatus, Role, new_conversation_id, new_message_id
from chatbot_sse.engines.base import Engine, StreamResult
from chatbot_sse.engines.simulated import SimulatedEngine
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import EAGER_START, ReplyHub, ReplyOutput
from chatbot_sse.stores import create_store
from chatbot_sse.turns import TurnService


async def test_a_reply_cancelled_before_its_task_ran_still_ends_its_log_and_readers() -> None:
    """A task cancelled before its first step never runs its coroutine: its turn would neither
    store the partial reply nor end the log, and its readers would wait forever."""
    store = create_store("memory://")
    await store.open()
    hub = ReplyHub(store, grace_seconds=1.0)
    cid, rid = new_conversation_id(), new_message_id()
    question = Message(new_message_id(), cid, Role.USER, "hi", time.time())
    await store.begin_turn(question, rid, create=True, owner=None, history_limit=5)
    reasons: list[object] = []

    async def generate(output: ReplyOutput) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            reasons.extend(exc.args)
            status = MessageStatus.INTERRUPTED
            reply = Message(rid, cid, Role.ASSISTANT, "", time.time(), status)
            await output.finish(b"event: error\ndata: {}\n\n", reply)
            raise

    live = hub.start(cid, rid, generate)
    assert hub.cancel(live, "superseded")  # in the same step as the start
    assert live.task is not None
    await asyncio.wait_for(asyncio.shield(live.task), 5)
    assert reasons == ["superseded"]
    assert live.finished
    assert (await store.read_events(cid, rid)).finished
    assert [m.role for m in await store.history(cid)] == [Role.USER, Role.ASSISTANT]
    await hub.close()
    await store.close()


async def test_a_reply_cancelled_again_while_storing_its_end_still_stores_it_first(
    tmp_path: Path,
) -> None:
    """Two new messages superseding the same reply cancel it twice. The second cancel used to
    cut the turn's shielded cleanup short: the task ended, its readers got no terminal event,
    and the next turn could begin before the partial reply was stored (and be filed first)."""
    store = create_store(f"sqlite:///{tmp_path}/chat.db")  # its writes take a thread's time
    await store.open()
    metrics = Metrics()
    hub = ReplyHub(store, grace_seconds=1.0)
    service = TurnService(store, SimulatedEngine(0, 0.05), metrics, 10)
    turn = await service.begin("Tell me a story", None, owner=None)
    encoded = encoded_turn(service, turn, 3000)
    live = hub.start(turn.conversation_id, turn.reply_id, encoded.generate, encoded.connected)
    reader = LiveSource(live, 0, hub.close)  # reads it as a response would

    async def read_to_end() -> bytes:
        got = b""
        while (batch := await reader.next_batch(10)) is not None:
            got += batch
        return got

    reading = asyncio.ensure_future(read_to_end())
    while len(live.frames) < 3:
        await live.waiter()
    assert hub.cancel(live, "superseded")
    assert hub.cancel(live, "superseded")  # a second racer: no second cancellation
    assert live.cancelling == "superseded"
    assert live.task is not None
    for _ in range(3):
        await asyncio.sleep(0)  # the turn is storing its partial reply now
    live.task.cancel()  # and something else cancels it again all the same (a shutdown)
    with contextlib.suppress(asyncio.CancelledError):
        await live.task
    assert live.logged_end  # the log's end was stored before the task ended
    assert b'"code":"superseded"' in live.frames[-1]
    assert (await reading).endswith(live.frames[-1])  # its reader saw the end, not a cut
    logged = await store.read_events(turn.conversation_id, turn.reply_id)
    assert logged.finished
    assert logged.events[-1][1] == live.frames[-1]
    stored = (await store.history(turn.conversation_id))[-1]
    assert (stored.id, stored.status) == (turn.reply_id, MessageStatus.INTERRUPTED)
    await hub.close()
    await store.close()


async def test_connected_is_the_first_frame_as_soon_as_the_turn_began_and_sent_once() -> None:
    """`connected` says the message is in: its frame is published by `start` itself, ahead of
    anything the reply's task does, for the response to send with its head; the turn does
    not emit it a second time."""
    store = create_store("memory://")
    await store.open()
    hub = ReplyHub(store, grace_seconds=1.0)
    service = TurnService(store, SimulatedEngine(0, 0), Metrics(), 10)
    turn = await service.begin("Hello there", None, owner=None)
    encoded = encoded_turn(service, turn, 3000)
    live = hub.start(turn.conversation_id, turn.reply_id, encoded.generate, encoded.connected)
    assert live.frames[0] == encoded.connected
    assert encoded.connected.startswith(
        b"retry: 3000\nevent: connected\nid: %s:0\n" % (turn.reply_id.encode())
    )
    reader = LiveSource(live, 0, hub.close)
    got = b""
    while (batch := await reader.next_batch(10)) is not None:
        got += batch
    assert got.count(b"event: connected") == 1
    assert got.startswith(encoded.connected)
    assert got.count(b"event: completed") == 1
    logged = await store.read_events(turn.conversation_id, turn.reply_id)
    assert [seq for seq, _ in logged.events] == list(range(len(live.frames)))
    assert logged.events[0][1] == encoded.connected
    await store.close()


async def test_the_first_chunk_is_there_when_start_returns_to_go_out_with_the_head() -> None:
    """On Python 3.12+ the generation's first step runs inside `start` (an eager task), up to
    the engine's first wait: the response finds the first `message` beside `connected` and
    writes both with its head. Scheduled, that step came after everything the loop had
    queued (at 1,000 replies started together, 70-110 ms after `connected`)."""
    store = create_store("memory://")
    await store.open()
    hub = ReplyHub(store, grace_seconds=1.0)
    service = TurnService(store, SimulatedEngine(0, 30), Metrics(), 10)  # 30 s between chunks
    turn = await service.begin("Hello there", None, owner=None)
    encoded = encoded_turn(service, turn, 3000)
    live = hub.start(turn.conversation_id, turn.reply_id, encoded.generate, encoded.connected)
    if EAGER_START:
        assert live.started
        assert len(live.frames) == 2  # `connected`, then the first chunk; the engine sleeps
        assert live.frames[1].startswith(b"event: message\nid: %s:1\n" % turn.reply_id.encode())
    else:
        assert not live.started  # Python 3.11: the task's first step is only scheduled
        assert live.frames == [encoded.connected]
    assert live.task is not None
    assert not live.task.done()
    hub.cancel(live, "cancelled")
    await asyncio.wait_for(asyncio.shield(live.task), 5)
    assert b'"code":"cancelled"' in live.frames[-1]
    await hub.close()
    await store.close()


class _ChunkEngine:
    """A stand-in engine streaming fixed chunks, an empty one among them, one at a time."""

    name = "chunks"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def health(self) -> dict[str, Any]:
        return {"name": self.name, "status": "ok"}

    async def stream(self, context: Sequence[Message]) -> AsyncGenerator[str, None]:
        for chunk in ("Hel", "", "lo", " there", "!"):
            await asyncio.sleep(0)
            yield chunk


class _BatchEngine(_ChunkEngine):
    """The same chunks, handed over as the batches an engine had ready together."""

    async def stream_batches(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[list[str], None]:
        yield ["Hel", "", "lo"]
        await asyncio.sleep(0)
        yield [""]
        yield [" there", "!"]


async def _reply_frames(engine: Engine) -> tuple[list[bytes], str]:
    store = create_store("memory://")
    await store.open()
    hub = ReplyHub(store, grace_seconds=1.0)
    service = TurnService(store, engine, Metrics(), 10)
    turn = await service.begin("Hello there", None, owner=None)
    encoded = encoded_turn(service, turn, 3000)
    live = hub.start(turn.conversation_id, turn.reply_id, encoded.generate, encoded.connected)
    assert live.task is not None
    await asyncio.wait_for(asyncio.shield(live.task), 5)
    await hub.close()
    await store.close()
    return live.frames, turn.reply_id


async def test_chunks_ready_together_are_still_one_event_each_in_order() -> None:
    """An engine's batch (`stream_batches`) is published in one call, as one `message` event
    per non-empty chunk with consecutive ids: the same events as chunk by chunk."""
    for engine in (_ChunkEngine(), _BatchEngine()):
        frames, rid = await _reply_frames(engine)
        events = [frame.split(b"\n", 2) for frame in frames[1:]]
        assert [name for name, _, _ in events] == [b"event: message"] * 4 + [b"event: completed"]
        assert [ident for _, ident, _ in events] == [
            b"id: %s:%d" % (rid.encode(), n) for n in range(1, 6)
        ]
        assert sse.said(frames) == "Hello there!"
        assert b'"content":"Hello there!"' in frames[-1]
