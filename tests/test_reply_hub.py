"""The reply hub's own guarantees, on the memory store: no live server needed to see them."""

from __future__ import annotations

import asyncio
import time

from chatbot_sse.domain import Message, MessageStatus, Role, new_conversation_id, new_message_id
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import ReplyHub, ReplyOutput
from chatbot_sse.stores import create_store


async def test_a_reply_cancelled_before_its_task_ran_still_ends_its_log_and_readers() -> None:
    """A task cancelled before its first step never runs its coroutine: its turn would neither
    store the partial reply nor end the log, and its readers would wait forever."""
    store = create_store("memory://")
    await store.open()
    hub = ReplyHub(store, Metrics(), grace_seconds=1.0)
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
