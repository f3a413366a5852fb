"""The Store protocol: where conversations and their messages live.

Every implementation passes the one contract suite in
`tests/contracts/test_store_contract.py`. Calls never block the event loop:
backends doing blocking I/O run it on their own thread. Failures of the
backend itself surface as `StoreUnavailable`, never as a driver exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from chatbot_sse.domain import Conversation, Message


@dataclass(slots=True, frozen=True)
class ReplyEvents:
    """What `read_events` found for one reply.

    `events` are `(seq, frame)` pairs with `seq > after_seq`, in seq order; a
    frame is the complete encoded SSE frame (bytes, ends with a blank line).
    `finished` is True once the reply's terminal event (completed/error) has
    been appended with `finished=True`. `exists` is False when no event of that
    reply is kept (never existed, or its retention ran out).
    """

    events: list[tuple[int, bytes]]
    finished: bool
    exists: bool


@dataclass(slots=True, frozen=True)
class ReplyControl:
    """Cross-process signals about a reply in flight."""

    cancel_requested: bool
    reader_seen_at: float | None  # time.time() of the last `mark_reader`, None if never


@runtime_checkable
class ReplyLog(Protocol):
    """The events of replies in flight, kept so a dropped client can resume anywhere.

    A reply is identified by `(conversation_id, reply_id)`; its events have seq
    0, 1, 2… (the `n` of the SSE id `<reply_id>:<n>`). Every worker and every
    instance sharing the backend sees the same log, which is what makes resume,
    cancel and the disconnect grace window work across processes. Events are
    kept while the reply is in flight and for `retention` seconds after it is
    finished; then they may disappear (`exists` becomes False).
    """

    async def append_events(
        self,
        conversation_id: str,
        reply_id: str,
        events: Sequence[tuple[int, bytes]],
        finished: bool = False,
    ) -> None:
        """Add events (in seq order, continuing the reply's log). `finished` marks the end.

        The first call for a reply also makes it the conversation's latest reply.
        """

    async def read_events(
        self, conversation_id: str, reply_id: str, after_seq: int = -1, wait: float = 0.0
    ) -> ReplyEvents:
        """Events with seq > after_seq. With `wait` > 0 and nothing new yet (and the reply
        not finished), wait up to `wait` seconds for new events before answering."""

    async def latest_reply(self, conversation_id: str) -> str | None:
        """The id of the conversation's most recent reply whose events are still kept."""

    async def request_cancel(self, conversation_id: str, reply_id: str) -> None:
        """Ask whichever process generates the reply to stop it."""

    async def mark_reader(self, conversation_id: str, reply_id: str) -> None:
        """Record that a client is reading the reply now (resets the grace window)."""

    async def reply_control(self, conversation_id: str, reply_id: str) -> ReplyControl:
        """The cancel flag and the last reader heartbeat of a reply."""


@runtime_checkable
class Store(ReplyLog, Protocol):
    """Conversations and their messages, oldest first, and the log of replies in flight."""

    backend: str

    async def open(self) -> None:
        """Connect. Called in the lifespan, i.e. after gunicorn has forked."""

    async def close(self) -> None:
        """Release connections; pending writes are flushed first."""

    async def ping(self) -> None:
        """Return if the backend answers, else raise `StoreUnavailable`."""

    async def create_conversation(self, conversation_id: str, created_at: float) -> Conversation:
        """Create a conversation with a fresh id chosen by the caller."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None if it does not exist."""

    async def append_message(self, message: Message) -> None:
        """Durably add a message to its (existing) conversation."""

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        """Messages oldest first; with `limit`, only the newest `limit` of them."""
