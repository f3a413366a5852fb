"""A turn's writes as single SQLite transactions: plain functions run on the store's thread.

A turn used to cost the store four round trips to its thread before its first
event (create the conversation, the user's message, the reply's log entry, then
read the history) and two more at its end (the reply, the log's last frames).
Each is a queued operation, a savepoint and a wake-up of the event loop; under
load that was most of a simulated reply's CPU. `begin` and `finish` do the same
work as one operation each, inside the group commit (`_sqlite_batch`), so it is
also all or nothing: a user message is never stored for a reply the log does
not know, nor a reply without its log's end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from chatbot_sse.domain import Message
from chatbot_sse.errors import ConversationNotFound, TurnInProgress
from chatbot_sse.stores import _sqlite_replies as replies
from chatbot_sse.stores._sqlite_sql import (
    INSERT_MESSAGE,
    SELECT_NEWEST,
    message_from_row,
    message_params,
)


def insert_message(conn: sqlite3.Connection, message: Message) -> None:
    """Insert `message`; an unknown conversation or a duplicate id become domain errors."""
    try:
        conn.execute(INSERT_MESSAGE, message_params(message))
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
            raise ConversationNotFound(
                f"conversation {message.conversation_id!r} not found"
            ) from exc
        raise ValueError(f"message {message.id!r} already exists") from exc


def begin(
    conn: sqlite3.Connection,
    message: Message,
    reply_id: str,
    create: bool,
    owner: str | None,
    history_limit: int,
    now: float,
    retention: float,
    sweep: bool,
) -> list[Message]:
    """`Store.begin_turn`, inside the caller's transaction (a savepoint of the batch)."""
    conversation_id = message.conversation_id
    if create:
        try:
            conn.execute(
                "INSERT INTO conversations (id, created_at, owner) VALUES (?, ?, ?)",
                (conversation_id, message.created_at, owner or ""),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"conversation {conversation_id!r} already exists") from exc
    else:
        row = conn.execute(
            "SELECT owner FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None or (owner is not None and row[0] != owner):
            raise ConversationNotFound(f"conversation {conversation_id} does not exist")
        busy = replies.in_flight(conn, conversation_id, now, retention)
        if busy is not None and busy != reply_id:
            raise TurnInProgress(conversation_id, busy)
    insert_message(conn, message)
    replies.enter(conn, (conversation_id, reply_id), now, retention, sweep)
    if create:  # the user's message is all there is: no read needed
        return [message] if history_limit > 0 else []
    rows = conn.execute(SELECT_NEWEST, (conversation_id, history_limit))
    return [message_from_row(row) for row in rows]


def finish(
    conn: sqlite3.Connection,
    reply: Message,
    events: Sequence[tuple[int, bytes]],
    now: float,
    retention: float,
) -> None:
    """`Store.finish_turn`, inside the caller's transaction."""
    insert_message(conn, reply)
    keys = (reply.conversation_id, reply.id)
    replies.append(conn, keys, events, True, now, retention)
