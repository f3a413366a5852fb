"""Composite store calls (`begin_turn`, `finish_turn`, the batched log calls) made of a
store's single-purpose calls.

For the memory store, where each call is already cheap and the composition needs no
transaction to be correct: nothing awaits in between, so the steps cannot interleave
with another task's. SQLite does a turn's writes in one group-committed transaction
(`_sqlite_turns`), Redis in one script each (`_redis_layout.BEGIN_TURN`, `FINISH_TURN`).
"""

from __future__ import annotations

from collections.abc import Sequence

from chatbot_sse.domain import Message
from chatbot_sse.errors import ConversationNotFound, TurnInProgress
from chatbot_sse.stores.base import LogAppend, ReplyControl, ReplyLog, Store, reply_state


async def begin_turn(
    store: Store,
    message: Message,
    reply_id: str,
    *,
    create: bool,
    owner: str | None,
    history_limit: int,
) -> list[Message]:
    conversation_id = message.conversation_id
    if create:
        await store.create_conversation(conversation_id, message.created_at, owner or "")
    else:
        found = await store.get_conversation(conversation_id)
        if found is None or (owner is not None and found.owner != owner):
            raise ConversationNotFound(f"conversation {conversation_id} does not exist")
        latest = await store.latest_reply(conversation_id)
        if latest is not None and latest != reply_id:
            state = await reply_state(store, conversation_id, latest)
            if state.exists and not state.finished:
                raise TurnInProgress(conversation_id, latest)
    await store.append_message(message)
    await store.append_events(conversation_id, reply_id, [])
    if create:  # nothing before it: no read needed
        return [message] if history_limit > 0 else []
    return await store.history(conversation_id, limit=history_limit)


async def finish_turn(store: Store, reply: Message, events: Sequence[tuple[int, bytes]]) -> None:
    await store.append_message(reply)
    await store.append_events(reply.conversation_id, reply.id, events, finished=True)


async def append_many(log: ReplyLog, appends: Sequence[LogAppend]) -> None:
    for a in appends:
        await log.append_events(a.conversation_id, a.reply_id, a.events, a.finished)


async def mark_writers(log: ReplyLog, replies: Sequence[tuple[str, str]]) -> None:
    for conversation_id, reply_id in replies:
        await log.mark_writer(conversation_id, reply_id)


async def reply_controls(log: ReplyLog, replies: Sequence[tuple[str, str]]) -> list[ReplyControl]:
    return [
        await log.reply_control(conversation_id, reply_id) for conversation_id, reply_id in replies
    ]
