"""The composite store calls a turn makes: `begin_turn`, `finish_turn` and the batched log
calls of the reply flusher, for every store (memory, SQLite, Redis; see `conftest.py`).

Each must do exactly what the single-purpose calls it replaces would have done, all of
it or (for SQLite, in one transaction) none of it.
"""

from __future__ import annotations

import asyncio

import pytest

from chatbot_sse.domain import Message, MessageStatus, Role, new_conversation_id, new_message_id
from chatbot_sse.errors import ConversationNotFound, TurnInProgress
from chatbot_sse.stores.base import LogAppend, Store

T0 = 1_700_000_000.0


def user(conversation_id: str, text: str, at: float = T0) -> Message:
    return Message(new_message_id(), conversation_id, Role.USER, text, at)


def reply_to(conversation_id: str, reply_id: str, text: str) -> Message:
    meta = {"finish_reason": "stop"}
    status = MessageStatus.COMPLETE
    return Message(reply_id, conversation_id, Role.ASSISTANT, text, T0 + 1, status, meta)


def frame(reply_id: str, seq: int) -> bytes:
    return f"event: message\nid: {reply_id}:{seq}\ndata: {{}}\n\n".encode()


async def test_begin_turn_creates_the_conversation_and_enters_the_reply(store: Store) -> None:
    cid, rid = new_conversation_id(), new_message_id()
    first = user(cid, "hello")
    context = await store.begin_turn(first, rid, create=True, owner="k1", history_limit=10)
    assert context == [first]
    found = await store.get_conversation(cid)
    assert found is not None
    assert found.owner == "k1"
    assert found.created_at == first.created_at
    assert await store.history(cid) == [first]
    assert await store.latest_reply(cid) == rid
    logged = await store.read_events(cid, rid)
    assert logged.exists
    assert not logged.finished
    assert logged.events == []


async def test_begin_turn_continues_with_the_newest_history(store: Store) -> None:
    cid = new_conversation_id()
    messages = []
    for n in range(4):
        m = user(cid, f"m{n}", T0 + n)
        rid = new_message_id()
        await store.begin_turn(m, rid, create=n == 0, owner=None, history_limit=3)
        await store.append_events(cid, rid, [], finished=True)  # one reply at a time
        messages.append(m)
    last = user(cid, "last", T0 + 9)
    context = await store.begin_turn(
        last, new_message_id(), create=False, owner="", history_limit=3
    )
    assert context == [*messages[2:], last]


async def test_begin_turn_refuses_unknown_and_foreign_conversations(store: Store) -> None:
    cid = new_conversation_id()
    await store.begin_turn(
        user(cid, "mine"), new_message_id(), create=True, owner="a", history_limit=5
    )
    for conversation_id, owner in ((cid, "b"), (new_conversation_id(), None)):
        rid = new_message_id()
        with pytest.raises(ConversationNotFound):
            await store.begin_turn(
                user(conversation_id, "x"), rid, create=False, owner=owner, history_limit=5
            )
        assert await store.read_events(conversation_id, rid) == (
            await store.read_events(new_conversation_id(), new_message_id())
        )  # nothing of it was logged
    assert [m.content for m in await store.history(cid)] == ["mine"]


async def test_begin_turn_without_owner_check_continues_anyones(store: Store) -> None:
    cid, rid = new_conversation_id(), new_message_id()
    await store.begin_turn(user(cid, "a"), rid, create=True, owner="a", history_limit=5)
    await store.append_events(cid, rid, [], finished=True)
    context = await store.begin_turn(
        user(cid, "b"), new_message_id(), create=False, owner=None, history_limit=5
    )
    assert [m.content for m in context] == ["a", "b"]


async def test_begin_turn_refuses_while_the_latest_reply_is_unfinished(store: Store) -> None:
    """One reply at a time per conversation: history alternates, each reply after its message."""
    cid, first = new_conversation_id(), new_message_id()
    await store.begin_turn(user(cid, "a"), first, create=True, owner=None, history_limit=5)
    await store.append_events(cid, first, [(0, frame(first, 0))])  # generating
    second = new_message_id()
    with pytest.raises(TurnInProgress) as busy:
        await store.begin_turn(user(cid, "b"), second, create=False, owner=None, history_limit=5)
    assert (busy.value.conversation_id, busy.value.reply_id) == (cid, first)
    assert busy.value.status_code == 409
    assert [m.content for m in await store.history(cid)] == ["a"]  # nothing of it stored
    assert await store.latest_reply(cid) == first
    assert not (await store.read_events(cid, second)).exists
    await store.finish_turn(reply_to(cid, first, "A"), [(1, frame(first, 1))])
    await store.begin_turn(user(cid, "b"), second, create=False, owner=None, history_limit=5)
    assert [m.content for m in await store.history(cid)] == ["a", "A", "b"]
    assert await store.latest_reply(cid) == second


async def test_begin_turn_refuses_to_create_an_existing_id(store: Store) -> None:
    cid = new_conversation_id()
    await store.begin_turn(
        user(cid, "a"), new_message_id(), create=True, owner=None, history_limit=5
    )
    with pytest.raises(ValueError, match="exists"):
        await store.begin_turn(
            user(cid, "b"), new_message_id(), create=True, owner=None, history_limit=5
        )
    assert [m.content for m in await store.history(cid)] == ["a"]


async def test_finish_turn_stores_the_reply_and_ends_its_log(store: Store) -> None:
    cid, rid = new_conversation_id(), new_message_id()
    question = user(cid, "hi")
    await store.begin_turn(question, rid, create=True, owner=None, history_limit=5)
    await store.append_events(cid, rid, [(0, frame(rid, 0))])
    reply = reply_to(cid, rid, "hello there")
    await store.finish_turn(reply, [(0, frame(rid, 0)), (1, frame(rid, 1)), (2, frame(rid, 2))])
    assert await store.history(cid) == [question, reply]
    logged = await store.read_events(cid, rid)
    assert logged.finished
    assert logged.events == [(seq, frame(rid, seq)) for seq in range(3)]  # no duplicate of 0
    await store.append_events(cid, rid, [(3, frame(rid, 3))])  # nothing after the end
    assert len((await store.read_events(cid, rid)).events) == 3


async def test_finish_turn_refused_stores_neither_the_reply_nor_the_end(store: Store) -> None:
    """All or nothing: a reply the store refuses (its id is taken) leaves the log open, so
    the turn can still end it with an `error` event."""
    cid, rid = new_conversation_id(), new_message_id()
    question = Message(rid, cid, Role.USER, "hi", T0)  # takes the id its reply will want
    await store.begin_turn(question, rid, create=True, owner=None, history_limit=5)
    clash = reply_to(cid, rid, "hello there")
    with pytest.raises(ValueError, match="already exists"):
        await store.finish_turn(clash, [(0, frame(rid, 0)), (1, frame(rid, 1))])
    assert await store.history(cid) == [question]
    logged = await store.read_events(cid, rid)
    assert not logged.finished
    assert logged.events == []


async def test_append_many_appends_to_each_reply(store: Store) -> None:
    turns = []
    for _ in range(3):
        cid, rid = new_conversation_id(), new_message_id()
        await store.begin_turn(user(cid, "q"), rid, create=True, owner=None, history_limit=1)
        turns.append((cid, rid))
    await store.append_many(
        [
            LogAppend(cid, rid, [(seq, frame(rid, seq)) for seq in range(n + 1)], finished=n == 2)
            for n, (cid, rid) in enumerate(turns)
        ]
    )
    await store.append_many([])
    for n, (cid, rid) in enumerate(turns):
        logged = await store.read_events(cid, rid)
        assert [seq for seq, _ in logged.events] == list(range(n + 1))
        assert logged.finished == (n == 2)


async def test_append_many_continues_replies_round_after_round(store: Store) -> None:
    """What the flusher does with replies in flight: each round continues every reply; a round
    may also re-send frames already kept (after a store failure it starts over from 0), name
    a reply the log does not know, or one already finished."""
    turns = []
    for _ in range(3):
        cid, rid = new_conversation_id(), new_message_id()
        await store.begin_turn(user(cid, "q"), rid, create=True, owner=None, history_limit=1)
        turns.append((cid, rid))

    def frames(rid: str, seqs: range) -> list[tuple[int, bytes]]:
        return [(seq, frame(rid, seq)) for seq in seqs]

    for start in range(0, 6, 2):  # three rounds of two frames each
        await store.append_many(
            [LogAppend(c, r, frames(r, range(start, start + 2))) for c, r in turns]
        )
    (c0, r0), (c1, r1), (c2, r2) = turns
    unknown = new_conversation_id(), new_message_id()
    await store.append_events(c2, r2, frames(r2, range(6, 7)), finished=True)
    await store.append_many(
        [
            LogAppend(c0, r0, frames(r0, range(6, 8))),  # a continuation
            LogAppend(c1, r1, frames(r1, range(0, 8))),  # from 0 again, 6 and 7 are new
            LogAppend(c2, r2, frames(r2, range(7, 9))),  # finished: nothing more is kept
            LogAppend(*unknown, frames(unknown[1], range(0, 2))),
        ]
    )
    for (cid, rid), last in ((turns[0], 7), (turns[1], 7), (turns[2], 6), (unknown, 1)):
        for after in (-1, 2, last - 1):
            logged = await store.read_events(cid, rid, after_seq=after)
            assert logged.events == frames(rid, range(after + 1, last + 1)), (rid, after)
    assert (await store.read_events(c2, r2)).finished


async def test_batched_heartbeats_and_controls(store: Store) -> None:
    turns = []
    for _ in range(2):
        cid, rid = new_conversation_id(), new_message_id()
        await store.begin_turn(user(cid, "q"), rid, create=True, owner=None, history_limit=1)
        turns.append((cid, rid))
    await store.request_cancel(*turns[1])
    unknown = (new_conversation_id(), new_message_id())
    before = [c.writer_seen_at for c in await store.reply_controls(turns)]
    await store.mark_writers(turns)
    controls = await store.reply_controls([*turns, unknown])
    assert [c.cancel_requested for c in controls] == [False, True, False]
    for old, new in zip(before, controls, strict=False):
        assert new.writer_seen_at is not None
        assert old is None or new.writer_seen_at >= old
    assert controls[2].writer_seen_at is None
    assert await store.reply_controls([]) == []


async def test_controls_of_every_reply_in_flight_in_their_order(store: Store) -> None:
    """The flusher asks for all replies at once: more than one SQL statement's worth here."""
    turns = [(new_conversation_id(), new_message_id()) for _ in range(450)]
    await asyncio.gather(
        *(
            store.begin_turn(user(cid, "q"), rid, create=True, owner=None, history_limit=1)
            for cid, rid in turns
        )
    )
    followed, cancelled = turns[7], turns[440]
    await store.mark_reader(*followed)
    await store.request_cancel(*cancelled)
    unknown = (new_conversation_id(), new_message_id())
    asked = [unknown, *reversed(turns)]
    controls = await store.reply_controls(asked)
    assert len(controls) == len(asked)
    readers = {key for key, c in zip(asked, controls, strict=True) if c.reader_seen_at is not None}
    cancels = {key for key, c in zip(asked, controls, strict=True) if c.cancel_requested}
    assert readers == {followed}
    assert cancels == {cancelled}
    assert controls[0].writer_seen_at is None
    assert all(c.writer_seen_at is not None for c in controls[1:])
