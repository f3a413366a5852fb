"""The Store protocol: where conversations and their messages live.

Every implementation passes the one contract suite in
`tests/contracts/test_store_contract.py`. Calls never block the event loop:
backends doing blocking I/O run it on their own thread. Failures of the
backend itself surface as `StoreUnavailable`, never as a driver exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload, runtime_checkable

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
    # time.time() of the generating process's last sign of life (`append_events` or
    # `mark_writer`), None if never: a follower tells a dead generator from a silent one by it.
    writer_seen_at: float | None = None


class EventRun(Sequence[tuple[int, bytes]]):
    """Events `first`, `first + 1`, ... of one reply, each frame exactly one SSE event as
    `chatbot_sse.sse` encodes them: ending in its blank line, with none inside (event
    names and ids are the server's own, `data` is JSON, which escapes every newline).

    How the reply hub hands its frames to the log. A store may rely on both promises:
    the SQLite store keeps a run in one row as it is, where events of unknown making must
    first be searched frame by frame for a blank line inside (`_sqlite_replies._rows`: for
    a fast reply's 22 frames, 7 of the 9 us that building its row took). Anything
    else that is a sequence of `(seq, frame)` pairs is an ordinary one to every store.
    """

    __slots__ = ("first", "frames")

    def __init__(self, first: int, frames: list[bytes]) -> None:
        self.first = first
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return enumerate(self.frames, self.first)

    @overload
    def __getitem__(self, index: int) -> tuple[int, bytes]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, bytes]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, bytes] | list[tuple[int, bytes]]:
        if isinstance(index, slice):
            return list(self)[index]
        position = range(len(self.frames))[index]  # IndexError as a list's
        return self.first + position, self.frames[position]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventRun):
            return self.first == other.first and self.frames == other.frames
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as the list it holds

    def __repr__(self) -> str:
        return f"EventRun({self.first}, {self.frames!r})"


@dataclass(slots=True, frozen=True)
class LogAppend:
    """One reply's part of `ReplyLog.append_many`: the arguments of one `append_events`."""

    conversation_id: str
    reply_id: str
    events: Sequence[tuple[int, bytes]]
    finished: bool = False


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

    async def mark_writer(self, conversation_id: str, reply_id: str) -> None:
        """Record that the process generating the reply is alive (its flusher's heartbeat)."""

    async def reply_control(self, conversation_id: str, reply_id: str) -> ReplyControl:
        """The cancel flag and the last reader and writer heartbeats of a reply."""

    async def append_many(self, appends: Sequence[LogAppend]) -> None:
        """`append_events` for several replies, in one write where the backend can: a
        process streaming a thousand replies flushes them together, not one by one."""

    async def mark_writers(self, replies: Sequence[tuple[str, str]]) -> None:
        """`mark_writer` for several `(conversation_id, reply_id)` at once."""

    async def reply_controls(self, replies: Sequence[tuple[str, str]]) -> list[ReplyControl]:
        """`reply_control` for several `(conversation_id, reply_id)`, in their order."""


_PAST_EVERY_SEQ = 1 << 30  # no reply has this many events


async def reply_state(log: ReplyLog, conversation_id: str, reply_id: str) -> ReplyEvents:
    """Whether a reply's log exists and is finished, none of its events read: a cancel,
    a new turn and a supersede only need to know if the reply is still going."""
    return await log.read_events(conversation_id, reply_id, after_seq=_PAST_EVERY_SEQ)


@dataclass(slots=True, frozen=True)
class HistoryPage:
    """Some of a conversation's messages, oldest first, and where they sit in it."""

    messages: list[Message]
    start: int
    """The index of `messages[0]` among all the conversation's messages (0: its first), or
    where the page would have begun if it is empty: messages before it exist when > 0."""


def check_page(limit: int, before: int | None) -> None:
    """`history_page`'s arguments: ValueError unless `limit` >= 1 and `before` is None or >= 0
    (a store that counts its messages elsewhere checks them before it goes there)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit}")
    if before is not None and before < 0:
        raise ValueError(f"before must be >= 0, not {before}")


def page_bounds(total: int, limit: int, before: int | None) -> tuple[int, int]:
    """`[start, end)` of the newest `limit` of the first `before` of `total` messages (of all
    of them when `before` is None): what every store's `history_page` returns."""
    check_page(limit, before)
    end = total if before is None else min(before, total)
    return max(0, end - limit), end


@dataclass(slots=True, frozen=True)
class IdempotencyRecord:
    """What a first request with an idempotency key left: its body's hash and its reply."""

    fingerprint: str
    ref: str


@runtime_checkable
class Guards(Protocol):
    """Counters every worker and instance shares: rate limits, stream slots, idempotency keys.

    Keys are opaque strings chosen by the caller (they name a client: a key's hash
    or an IP). Times are `time.time()` seconds on the calling machine; the
    windows are short, so instances need clocks in sync only to a second or so.
    Like everything in the store these are best effort under failure: a
    `StoreUnavailable` is for the caller to judge.
    """

    async def hit(self, key: str, window_seconds: float, limit: int) -> tuple[bool, float]:
        """Count one request in `key`'s fixed window (it starts at the window's first hit).

        Returns (allowed, retry_after): allowed while the count is at most
        `limit`; retry_after is the number of seconds until the window ends.
        """

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_seconds: float) -> bool:
        """Take one of `limit` slots of `key` for `holder` (a unique id); False if all are taken.

        A slot not released within `lease_seconds` (its process died) frees itself.
        Acquiring again for a holder that has one renews its lease.
        """

    async def release_slot(self, key: str, holder: str) -> None:
        """Give the slot back; nothing happens if `holder` has none."""

    async def remember_idempotency(
        self, key: str, fingerprint: str, ref: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        """Record `(fingerprint, ref)` under `key` for `ttl_seconds` unless a record is kept.

        None: this call made the record (the caller does the work). Otherwise
        the record an earlier call made, unchanged. Atomic across processes.
        """

    async def forget_idempotency(self, key: str) -> None:
        """Drop the record (the work it stood for failed before it started)."""


@runtime_checkable
class Store(ReplyLog, Guards, Protocol):
    """Conversations and their messages, oldest first, the log of replies in flight, and guards."""

    backend: str
    reconnects: bool
    """True for a backend reached over the network, which may be down for a while and come
    back (Redis): the server then starts without it, degraded, and keeps calling `open()`.
    False where an `open()` failure means a configuration error (a SQLite file): the server
    refuses to start."""

    async def open(self) -> None:
        """Connect (StoreUnavailable if not possible). Called in the lifespan, after gunicorn
        has forked; may be called again after a failure until it succeeds."""

    async def close(self) -> None:
        """Release connections; pending writes are flushed first."""

    async def ping(self) -> None:
        """Return if the backend answers, else raise `StoreUnavailable`."""

    async def create_conversation(
        self, conversation_id: str, created_at: float, owner: str = ""
    ) -> Conversation:
        """Create a conversation with a fresh id chosen by the caller, belonging to `owner`."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None if it does not exist."""

    async def append_message(self, message: Message) -> None:
        """Durably add a message to its (existing) conversation."""

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        """Messages oldest first; with `limit`, only the newest `limit` of them."""

    async def history_page(
        self, conversation_id: str, limit: int, before: int | None = None
    ) -> HistoryPage:
        """The newest `limit` (>= 1) messages among those with an index below `before` (all
        of them when None), oldest first: a long conversation read a page at a time, newest
        page first. A message's index is its position in the conversation (0: the first);
        messages are only ever appended, so an index stays valid while the conversation
        grows. Empty for an unknown conversation (the caller checks that it exists)."""

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete the conversation, its messages and its replies' logs, at once and for good;
        False if it did not exist. A reply still generating is the caller's to stop first:
        storing it would fail (the conversation is gone)."""

    async def begin_turn(
        self,
        message: Message,
        reply_id: str,
        *,
        create: bool,
        owner: str | None,
        history_limit: int,
    ) -> list[Message]:
        """Start a turn: what used to be four calls, in one write where the backend can.

        With `create`, the conversation `message.conversation_id` is new: it is
        created (at `message.created_at`, for `owner`, "" if None), or
        `ValueError` if it exists. Else it must exist and, when `owner` is not
        None, belong to `owner`, or `ConversationNotFound` (nothing is stored);
        and its latest reply must have finished (or be abandoned: not appended
        to for `ABANDONED_AFTER`), or `TurnInProgress` naming that reply
        (nothing is stored): one reply at a time per conversation, so history
        alternates and each reply follows its own message.
        Then the user's `message` is stored durably and the reply `reply_id` is
        entered in the log, empty, as the conversation's latest (so a resume or
        a cancel through any process finds it from the first event on).

        Returns the turn's context: the newest `history_limit` messages, the
        user's included, oldest first.
        """

    async def finish_turn(self, reply: Message, events: Sequence[tuple[int, bytes]]) -> None:
        """End a turn: store `reply` durably and append the reply's last `events` to the log,
        marking it finished (`append_events(..., finished=True)`), atomically where the
        backend can. The reply's log entry exists (`begin_turn`)."""
