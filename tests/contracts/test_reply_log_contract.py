"""The ReplyLog contract: what resume, cancel and the grace window rely on, for every store.

The stores come from `conftest.py` (memory, SQLite, Redis). A second store
object over the same backend (`make_store()` again) stands in for another
worker or instance; the memory store has no such thing and skips those tests.
Timing assertions are loose upper bounds: they tell "woke early" from "waited
the whole time", nothing finer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from chatbot_sse.domain import new_conversation_id, new_message_id
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores.base import EventRun, ReplyControl, ReplyEvents, ReplyLog, Store

StoreFactory = Callable[..., Store]

RETENTION = 0.5  # seconds, for the expiry tests; long enough for a loaded machine


def frame(reply_id: str, seq: int, text: str = "chunk") -> bytes:
    return f'event: message\nid: {reply_id}:{seq}\ndata: {{"content": "{text} {seq}"}}\n\n'.encode()


def frames(reply_id: str, seqs: range) -> list[tuple[int, bytes]]:
    return [(seq, frame(reply_id, seq)) for seq in seqs]


def ids() -> tuple[str, str]:
    return new_conversation_id(), new_message_id()


@pytest.fixture
async def other(make_store: StoreFactory, store: Store) -> AsyncIterator[Store]:
    """A second store object on the same backend: another process, as far as the log knows."""
    if store.backend == "memory":
        pytest.skip("a memory store is one process; there is no other to share it")
    second = make_store()
    await second.open()
    yield second
    await second.close()


@pytest.fixture
async def short_lived(make_store: StoreFactory) -> AsyncIterator[Store]:
    """A store keeping finished replies for only `RETENTION` seconds."""
    store = make_store(event_retention=RETENTION)
    await store.open()
    yield store
    await store.close()


def test_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, ReplyLog)


async def test_unknown_reply(store: Store) -> None:
    conversation_id, reply_id = ids()
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents([], False, False)
    assert await store.latest_reply(conversation_id) is None
    assert await store.reply_control(conversation_id, reply_id) == ReplyControl(False, None)
    await store.append_events(conversation_id, reply_id, [(0, b"new")])  # the id, once more
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents(
        [(0, b"new")], False, True
    )
    control = await store.reply_control(conversation_id, reply_id)
    assert (control.cancel_requested, control.reader_seen_at) == (False, None)


async def test_events_come_back_in_order_after_seq(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(6))
    await store.append_events(conversation_id, reply_id, sent[:1])
    await store.append_events(conversation_id, reply_id, sent[1:4])
    await store.append_events(conversation_id, reply_id, sent[4:])
    got = await store.read_events(conversation_id, reply_id)
    assert got == ReplyEvents(sent, finished=False, exists=True)
    assert (await store.read_events(conversation_id, reply_id, after_seq=-1)).events == sent
    assert (await store.read_events(conversation_id, reply_id, after_seq=0)).events == sent[1:]
    assert (await store.read_events(conversation_id, reply_id, after_seq=3)).events == sent[4:]
    assert await store.read_events(conversation_id, reply_id, after_seq=5) == ReplyEvents(
        [], finished=False, exists=True
    )
    beyond = await store.read_events(conversation_id, reply_id, after_seq=1 << 30)
    assert beyond == ReplyEvents([], finished=False, exists=True)


async def test_a_read_may_start_inside_one_append(store: Store) -> None:
    """Resume points fall anywhere, also inside frames appended together (SQLite keeps
    those as one row), and whatever precedes or follows them: gaps, odd frames."""
    conversation_id, reply_id = ids()
    sent = [*frames(reply_id, range(6)), (7, b"odd\n\nframe"), *frames(reply_id, range(8, 11))]
    await store.append_events(conversation_id, reply_id, sent[:9])
    await store.append_events(conversation_id, reply_id, sent[9:], finished=True)
    for after in range(-1, 11):
        got = await store.read_events(conversation_id, reply_id, after_seq=after)
        assert got.events == [(seq, f) for seq, f in sent if seq > after], after
        assert got.finished


async def test_frames_are_kept_byte_for_byte(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = [
        (0, b""),
        (1, b"\x00\xff\r\n\n binary"),
        (2, "data: 你好 🤖\n\n".encode()),
        (3, b"x" * 200_000),
    ]
    await store.append_events(conversation_id, reply_id, sent, finished=True)
    got = await store.read_events(conversation_id, reply_id)
    assert got.events == sent
    assert all(type(f) is bytes for _, f in got.events)


async def test_seqs_may_have_gaps(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = [(0, b"a"), (5, b"b"), (6, b"c"), (40, b"d")]
    await store.append_events(conversation_id, reply_id, sent)
    assert (await store.read_events(conversation_id, reply_id, after_seq=4)).events == sent[1:]
    assert (await store.read_events(conversation_id, reply_id, after_seq=6)).events == sent[3:]


async def test_finished_flag(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(4))
    await store.append_events(conversation_id, reply_id, sent[:2])
    assert not (await store.read_events(conversation_id, reply_id)).finished
    await store.append_events(conversation_id, reply_id, sent[2:], finished=True)
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents(sent, True, True)
    assert await store.read_events(conversation_id, reply_id, 3) == ReplyEvents([], True, True)


async def test_finishing_with_no_new_event(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(3))
    await store.append_events(conversation_id, reply_id, sent)
    await store.append_events(conversation_id, reply_id, [], finished=True)
    assert await store.read_events(conversation_id, reply_id, 0) == ReplyEvents(
        sent[1:], True, True
    )


async def test_a_reply_may_start_empty(store: Store) -> None:
    conversation_id, reply_id = ids()
    await store.append_events(conversation_id, reply_id, [])
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents([], False, True)
    assert await store.latest_reply(conversation_id) == reply_id
    other_conversation, finished_empty = ids()
    await store.append_events(other_conversation, finished_empty, [], finished=True)
    assert await store.read_events(other_conversation, finished_empty) == ReplyEvents(
        [], True, True
    )


async def test_appends_are_idempotent_per_seq(store: Store) -> None:
    """A writer that retries a batch it isn't sure about must not duplicate events."""
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(5))
    await store.append_events(conversation_id, reply_id, sent[:3])
    await store.append_events(conversation_id, reply_id, sent[:3])
    await store.append_events(conversation_id, reply_id, sent[2:])
    assert (await store.read_events(conversation_id, reply_id)).events == sent


async def test_nothing_is_added_once_finished(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(2))
    await store.append_events(conversation_id, reply_id, sent, finished=True)
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(2, 4)))
    await store.append_events(conversation_id, reply_id, [], finished=True)
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents(sent, True, True)


async def test_replies_are_isolated(store: Store) -> None:
    conversation_id, first = ids()
    second = new_message_id()
    other_conversation = new_conversation_id()
    await store.append_events(conversation_id, first, [(0, b"first")])
    await store.append_events(conversation_id, second, [(0, b"second")], finished=True)
    await store.append_events(other_conversation, first, [(0, b"elsewhere")])
    assert (await store.read_events(conversation_id, first)).events == [(0, b"first")]
    assert not (await store.read_events(conversation_id, first)).finished
    assert (await store.read_events(conversation_id, second)).events == [(0, b"second")]
    assert (await store.read_events(other_conversation, first)).events == [(0, b"elsewhere")]
    await store.request_cancel(conversation_id, first)
    assert not (await store.reply_control(other_conversation, first)).cancel_requested


async def test_latest_reply_follows_new_replies(store: Store) -> None:
    conversation_id, first = ids()
    second = new_message_id()
    await store.append_events(conversation_id, first, frames(first, range(2)))
    assert await store.latest_reply(conversation_id) == first
    await store.append_events(conversation_id, first, frames(first, range(2, 3)), finished=True)
    assert await store.latest_reply(conversation_id) == first
    await store.append_events(conversation_id, second, frames(second, range(1)))
    assert await store.latest_reply(conversation_id) == second
    assert await store.latest_reply(new_conversation_id()) is None


async def test_cancel_and_reader_round_trip(store: Store) -> None:
    conversation_id, reply_id = ids()
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(1)))
    control = await store.reply_control(conversation_id, reply_id)
    assert (control.cancel_requested, control.reader_seen_at) == (False, None)
    before = time.time()
    await store.mark_reader(conversation_id, reply_id)
    control = await store.reply_control(conversation_id, reply_id)
    assert not control.cancel_requested
    assert control.reader_seen_at is not None
    assert before - 0.01 <= control.reader_seen_at <= time.time() + 0.01
    await store.request_cancel(conversation_id, reply_id)
    await store.request_cancel(conversation_id, reply_id)
    control = await store.reply_control(conversation_id, reply_id)
    assert control.cancel_requested
    assert control.reader_seen_at is not None
    await asyncio.sleep(0.01)
    await store.mark_reader(conversation_id, reply_id)
    later = await store.reply_control(conversation_id, reply_id)
    assert later.reader_seen_at is not None
    assert later.reader_seen_at > control.reader_seen_at
    assert later.cancel_requested


async def test_writer_heartbeat(store: Store) -> None:
    """Appends and `mark_writer` are the generating process's signs of life; never after the end."""
    conversation_id, reply_id = ids()
    await store.mark_writer(conversation_id, reply_id)  # unknown: ignored
    assert (await store.reply_control(conversation_id, reply_id)).writer_seen_at is None
    before = time.time()
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(1)))
    appended = (await store.reply_control(conversation_id, reply_id)).writer_seen_at
    assert appended is not None
    assert before - 0.01 <= appended <= time.time() + 0.01
    await asyncio.sleep(0.01)
    await store.mark_writer(conversation_id, reply_id)
    marked = (await store.reply_control(conversation_id, reply_id)).writer_seen_at
    assert marked is not None
    assert marked > appended


async def test_control_of_an_unknown_reply_is_ignored(store: Store) -> None:
    """Signals never bring a reply into being (or back from expiry)."""
    conversation_id, reply_id = ids()
    await store.request_cancel(conversation_id, reply_id)
    await store.mark_reader(conversation_id, reply_id)
    assert await store.reply_control(conversation_id, reply_id) == ReplyControl(False, None)
    assert not (await store.read_events(conversation_id, reply_id)).exists
    assert await store.latest_reply(conversation_id) is None


# --- waiting ---------------------------------------------------------------------------------


async def timed(call: asyncio.Future[ReplyEvents]) -> tuple[ReplyEvents, float]:
    start = time.monotonic()
    result = await call
    return result, time.monotonic() - start


async def test_wait_returns_when_events_arrive(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(4))
    await store.append_events(conversation_id, reply_id, sent[:2])
    reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 1, wait=5))
    await asyncio.sleep(0.05)
    assert not reader.done()
    await store.append_events(conversation_id, reply_id, sent[2:])
    result, elapsed = await timed(reader)
    assert result == ReplyEvents(sent[2:], finished=False, exists=True)
    assert elapsed < 1


async def test_wait_returns_when_the_reply_finishes(store: Store) -> None:
    conversation_id, reply_id = ids()
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(2)))
    reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 1, wait=5))
    await asyncio.sleep(0.05)
    await store.append_events(conversation_id, reply_id, [], finished=True)
    result, elapsed = await timed(reader)
    assert result == ReplyEvents([], finished=True, exists=True)
    assert elapsed < 1


async def test_wait_times_out_empty(store: Store) -> None:
    conversation_id, reply_id = ids()
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(2)))
    result, elapsed = await timed(
        asyncio.ensure_future(store.read_events(conversation_id, reply_id, 1, wait=0.2))
    )
    assert result == ReplyEvents([], finished=False, exists=True)
    assert 0.18 <= elapsed < 1.5


async def test_wait_does_not_delay_an_answer_at_hand(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(3))
    await store.append_events(conversation_id, reply_id, sent, finished=True)
    unknown = new_message_id()
    for after, expected in [
        (0, ReplyEvents(sent[1:], True, True)),  # events waiting
        (2, ReplyEvents([], True, True)),  # finished
    ]:
        call = asyncio.ensure_future(store.read_events(conversation_id, reply_id, after, wait=5))
        result, elapsed = await timed(call)
        assert (result, elapsed < 0.5) == (expected, True)
    call = asyncio.ensure_future(store.read_events(conversation_id, unknown, wait=5))
    result, elapsed = await timed(call)
    assert (result, elapsed < 0.5) == (ReplyEvents([], False, False), True)


async def test_waiting_readers_are_independent(store: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(3))
    await store.append_events(conversation_id, reply_id, sent[:1])
    readers = [
        asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=5))
        for _ in range(5)
    ]
    await asyncio.sleep(0.05)
    await store.append_events(conversation_id, reply_id, sent[1:], finished=True)
    results = await asyncio.wait_for(asyncio.gather(*readers), 2)
    assert all(r == ReplyEvents(sent[1:], True, True) for r in results)


async def test_a_reader_cancelled_while_waiting_leaves_the_store_usable(store: Store) -> None:
    conversation_id, reply_id = ids()
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(1)))
    reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=5))
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(1, 2)))
    assert (await store.read_events(conversation_id, reply_id, 0, wait=1)).events == frames(
        reply_id, range(1, 2)
    )


async def test_close_ends_a_wait(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    conversation_id, reply_id = ids()
    await store.append_events(conversation_id, reply_id, frames(reply_id, range(1)))
    reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=10))
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await asyncio.wait_for(store.close(), 2)
    with pytest.raises(StoreUnavailable, match="closed"):
        await asyncio.wait_for(reader, 2)
    assert time.monotonic() - start < 1


# --- other processes -------------------------------------------------------------------------


async def test_another_store_object_sees_the_log(store: Store, other: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(3))
    await store.append_events(conversation_id, reply_id, sent[:2])
    assert await other.read_events(conversation_id, reply_id) == ReplyEvents(sent[:2], False, True)
    assert await other.latest_reply(conversation_id) == reply_id
    await other.request_cancel(conversation_id, reply_id)
    await other.mark_reader(conversation_id, reply_id)
    control = await store.reply_control(conversation_id, reply_id)
    assert control.cancel_requested
    assert control.reader_seen_at is not None
    await store.append_events(conversation_id, reply_id, sent[2:], finished=True)
    assert await other.read_events(conversation_id, reply_id, 1) == ReplyEvents(
        sent[2:], True, True
    )


async def test_a_wait_wakes_on_another_store_objects_append(store: Store, other: Store) -> None:
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(3))
    await store.append_events(conversation_id, reply_id, sent[:1])
    reader = asyncio.ensure_future(other.read_events(conversation_id, reply_id, 0, wait=5))
    await asyncio.sleep(0.1)
    assert not reader.done()
    await store.append_events(conversation_id, reply_id, sent[1:])
    result, elapsed = await timed(reader)
    assert result == ReplyEvents(sent[1:], finished=False, exists=True)
    assert elapsed < 1
    reader = asyncio.ensure_future(other.read_events(conversation_id, reply_id, 2, wait=5))
    await asyncio.sleep(0.1)
    await store.append_events(conversation_id, reply_id, [], finished=True)
    result, elapsed = await timed(reader)
    assert result == ReplyEvents([], finished=True, exists=True)
    assert elapsed < 1


# --- retention -------------------------------------------------------------------------------


async def test_finished_replies_expire_after_retention(short_lived: Store) -> None:
    store = short_lived
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(2))
    await store.append_events(conversation_id, reply_id, sent, finished=True)
    await store.mark_reader(conversation_id, reply_id)
    await store.request_cancel(conversation_id, reply_id)
    assert (await store.read_events(conversation_id, reply_id)).exists
    await asyncio.sleep(RETENTION + 0.1)
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents([], False, False)
    assert await store.latest_reply(conversation_id) is None
    assert await store.reply_control(conversation_id, reply_id) == ReplyControl(False, None)
    await store.append_events(conversation_id, reply_id, [(0, b"new")])  # the id, once more
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents(
        [(0, b"new")], False, True
    )
    control = await store.reply_control(conversation_id, reply_id)
    assert (control.cancel_requested, control.reader_seen_at) == (False, None)


async def test_unfinished_replies_outlive_retention(short_lived: Store) -> None:
    store = short_lived
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(2))
    await store.append_events(conversation_id, reply_id, sent[:1])
    await asyncio.sleep(RETENTION + 0.1)
    assert await store.read_events(conversation_id, reply_id) == ReplyEvents(sent[:1], False, True)
    assert await store.latest_reply(conversation_id) == reply_id
    await store.append_events(conversation_id, reply_id, sent[1:], finished=True)
    assert (await store.read_events(conversation_id, reply_id)).events == sent
    await asyncio.sleep(RETENTION + 0.1)
    assert not (await store.read_events(conversation_id, reply_id)).exists


async def test_many_expired_replies_are_pruned(short_lived: Store) -> None:
    """Enough appends to trigger the backends' sweeps; nothing kept outlives its retention."""
    store = short_lived
    conversation_id = new_conversation_id()
    old = [new_message_id() for _ in range(70)]
    for reply_id in old:
        await store.append_events(conversation_id, reply_id, [(0, b"x")], finished=True)
    await asyncio.sleep(RETENTION + 0.1)
    fresh = [new_message_id() for _ in range(70)]
    for reply_id in fresh:
        await store.append_events(conversation_id, reply_id, [(0, b"y")], finished=True)
    assert not (await store.read_events(conversation_id, old[0])).exists
    assert (await store.read_events(conversation_id, fresh[-1])).events == [(0, b"y")]
    assert await store.latest_reply(conversation_id) == fresh[-1]


# --- lifecycle -------------------------------------------------------------------------------


async def test_log_calls_need_an_open_store(make_store: StoreFactory) -> None:
    store = make_store()
    conversation_id, reply_id = ids()

    def calls() -> list[Coroutine[Any, Any, object]]:
        return [
            store.append_events(conversation_id, reply_id, [(0, b"x")]),
            store.read_events(conversation_id, reply_id),
            store.read_events(conversation_id, reply_id, wait=1),
            store.latest_reply(conversation_id),
            store.request_cancel(conversation_id, reply_id),
            store.mark_reader(conversation_id, reply_id),
            store.reply_control(conversation_id, reply_id),
        ]

    for call in calls():
        with pytest.raises(StoreUnavailable, match="not open"):
            await call
    await store.open()
    await store.close()
    for call in calls():
        with pytest.raises(StoreUnavailable, match="closed"):
            await call


async def test_an_event_run_is_kept_as_any_events(store: Store) -> None:
    """The hub hands a reply's own frames over as an `EventRun`; every store keeps them as
    it keeps any `(seq, frame)` pairs, and they read back from any resume point."""
    conversation_id, reply_id = ids()
    sent = frames(reply_id, range(9))
    await store.append_events(conversation_id, reply_id, EventRun(0, [f for _, f in sent[:4]]))
    await store.append_events(
        conversation_id, reply_id, EventRun(4, [f for _, f in sent[4:]]), finished=True
    )
    for after in range(-1, 9):
        got = await store.read_events(conversation_id, reply_id, after_seq=after)
        assert got == ReplyEvents([e for e in sent if e[0] > after], finished=True, exists=True)


def test_an_event_run_is_a_sequence_of_seq_and_frame() -> None:
    run = EventRun(7, [b"a\n\n", b"b\n\n", b"c\n\n"])
    pairs = [(7, b"a\n\n"), (8, b"b\n\n"), (9, b"c\n\n")]
    assert list(run) == pairs
    assert len(run) == 3
    assert run[0] == (7, b"a\n\n")
    assert run[-1] == (9, b"c\n\n")
    assert run[1:] == pairs[1:]
    assert run == pairs
    assert run == EventRun(7, [b"a\n\n", b"b\n\n", b"c\n\n"])
    assert run != EventRun(6, [b"a\n\n", b"b\n\n", b"c\n\n"])
    with pytest.raises(IndexError):
        run[3]
    with pytest.raises(IndexError):
        run[-4]
    assert list(EventRun(0, [])) == []
