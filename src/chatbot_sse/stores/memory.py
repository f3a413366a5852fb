"""MemoryStore: conversations in dicts, for tests and single-process demos.

Nothing survives the process, and gunicorn workers would each see their own
dicts, so it is never a production choice. It follows the same contract as the
persistent stores, down to the details tests might otherwise come to rely on by
accident: it must be opened before use, refuses calls once closed, and keeps
`meta` as a JSON round-tripped copy (JSON types only, no aliasing with the
caller's dict; orjson's types, so integers within 64 bits), exactly what SQLite
or Redis would hand back, and rejects content that is not valid Unicode.

Its reply log keeps events in lists and wakes waiting readers with an
`asyncio.Event` per reply (swapped for a fresh one at every change, so a waiter
holds the one that will be set); expired replies are dropped when touched and
swept every `PRUNE_EVERY` appends. The sweep pops a heap of expiry times, so
it costs what expired, not what is kept (a full scan every few appends made a
busy store quadratic). A wait in progress when the store closes
ends with `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import time
from bisect import bisect_right
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson

from chatbot_sse.domain import Conversation, Message
from chatbot_sse.errors import ConversationNotFound, StoreUnavailable
from chatbot_sse.stores import _turns
from chatbot_sse.stores._retention import ABANDONED_AFTER, PRUNE_EVERY, check_retention
from chatbot_sse.stores.base import (
    HistoryPage,
    IdempotencyRecord,
    LogAppend,
    ReplyControl,
    ReplyEvents,
    page_bounds,
)

__all__ = ["MemoryStore", "from_url"]


def _json_copy(meta: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(meta)) if meta else {}
    return copied


_seq_of = itemgetter(0)


@dataclasses.dataclass(slots=True)
class _Reply:
    """One reply's log; times are `time.monotonic()` except `reader_seen_at`."""

    touched: float
    events: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    last_seq: int = -1
    finished_at: float | None = None
    cancel_requested: bool = False
    reader_seen_at: float | None = None
    writer_seen_at: float | None = None
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def kept(self, now: float, retention: float) -> bool:
        return now < self.expires_at(retention)

    def expires_at(self, retention: float) -> float:
        if self.finished_at is None:
            return self.touched + ABANDONED_AFTER
        return self.finished_at + retention

    def wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class MemoryStore:
    """A `Store` held in this process's memory. Only `read_events` with `wait` ever awaits."""

    backend = "memory"
    reconnects = False

    def __init__(self, *, event_retention: float = 300.0) -> None:
        check_retention(event_retention)
        self.event_retention = event_retention
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, list[Message]] = {}
        self._message_ids: set[str] = set()
        self._replies: dict[tuple[str, str], _Reply] = {}
        self._latest: dict[str, str] = {}
        # (expiry time when pushed, key): a reply touched since is pushed again when popped
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._appends = 0
        self._state = "new"
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, ends at)
        self._slots: dict[str, dict[str, float]] = {}  # key -> holder -> lease ends at
        self._idempotency: dict[str, tuple[IdempotencyRecord, float]] = {}
        self._guard_calls = 0

    def _check_open(self) -> None:
        if self._state != "open":
            state = "closed" if self._state == "closed" else "not open"
            raise StoreUnavailable(f"memory store is {state}")

    async def open(self) -> None:
        if self._state == "closed":
            raise StoreUnavailable("memory store is closed")
        self._state = "open"

    async def close(self) -> None:
        self._state = "closed"
        for reply in self._replies.values():
            reply.wake()  # waiting readers see the store closed

    async def ping(self) -> None:
        self._check_open()

    async def create_conversation(
        self, conversation_id: str, created_at: float, owner: str = ""
    ) -> Conversation:
        self._check_open()
        if conversation_id in self._conversations:
            raise ValueError(f"conversation {conversation_id!r} already exists")
        conversation = Conversation(conversation_id, created_at, owner)
        self._conversations[conversation_id] = conversation
        self._messages[conversation_id] = []
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        self._check_open()
        return self._conversations.get(conversation_id)

    async def append_message(self, message: Message) -> None:
        self._check_open()
        messages = self._messages.get(message.conversation_id)
        if messages is None:
            raise ConversationNotFound(f"conversation {message.conversation_id!r} not found")
        if message.id in self._message_ids:
            raise ValueError(f"message {message.id!r} already exists")
        message.content.encode()  # UnicodeEncodeError (a ValueError) on lone surrogates, as SQLite
        messages.append(dataclasses.replace(message, meta=_json_copy(message.meta)))
        self._message_ids.add(message.id)

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        self._check_open()
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        messages = self._messages.get(conversation_id, [])
        if limit is not None:
            messages = messages[-limit:] if limit else []
        return [dataclasses.replace(m, meta=_json_copy(m.meta)) if m.meta else m for m in messages]

    async def history_page(
        self, conversation_id: str, limit: int, before: int | None = None
    ) -> HistoryPage:
        self._check_open()
        messages = self._messages.get(conversation_id, [])
        start, end = page_bounds(len(messages), limit, before)
        page = [dataclasses.replace(m, meta=_json_copy(m.meta)) for m in messages[start:end]]
        return HistoryPage(page, start)

    async def delete_conversation(self, conversation_id: str) -> bool:
        self._check_open()
        if self._conversations.pop(conversation_id, None) is None:
            return False
        for message in self._messages.pop(conversation_id, []):
            self._message_ids.discard(message.id)
        for key in [key for key in self._replies if key[0] == conversation_id]:
            self._replies.pop(key).wake()  # a follower waiting on it finds it gone
        self._latest.pop(conversation_id, None)
        return True

    async def begin_turn(
        self,
        message: Message,
        reply_id: str,
        *,
        create: bool,
        owner: str | None,
        history_limit: int,
    ) -> list[Message]:
        return await _turns.begin_turn(
            self, message, reply_id, create=create, owner=owner, history_limit=history_limit
        )

    async def finish_turn(self, reply: Message, events: Sequence[tuple[int, bytes]]) -> None:
        await _turns.finish_turn(self, reply, events)

    # --- the reply log ---------------------------------------------------------------------

    def _reply(self, conversation_id: str, reply_id: str) -> _Reply | None:
        """The reply if it is still kept; an expired one is dropped on the way."""
        key = (conversation_id, reply_id)
        reply = self._replies.get(key)
        if reply is not None and not reply.kept(time.monotonic(), self.event_retention):
            del self._replies[key]
            return None
        return reply

    def _prune(self) -> None:
        now = time.monotonic()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, key = heapq.heappop(expiry)
            reply = self._replies.get(key)
            if reply is None:
                continue
            expires_at = reply.expires_at(self.event_retention)
            if expires_at > now:  # touched or finished since it was pushed
                heapq.heappush(expiry, (expires_at, key))
                continue
            del self._replies[key]
            conversation_id, reply_id = key
            if self._latest.get(conversation_id) == reply_id:
                del self._latest[conversation_id]

    async def append_events(
        self,
        conversation_id: str,
        reply_id: str,
        events: Sequence[tuple[int, bytes]],
        finished: bool = False,
    ) -> None:
        self._check_open()
        self._appends += 1
        if self._appends % PRUNE_EVERY == 0:
            self._prune()
        now = time.monotonic()
        reply = self._reply(conversation_id, reply_id)
        if reply is None:
            reply = self._replies[conversation_id, reply_id] = _Reply(now)
            self._latest[conversation_id] = reply_id
            self._expire_later(reply, conversation_id, reply_id)
        if reply.finished_at is not None:
            return
        for seq, frame in events:
            if seq > reply.last_seq:
                reply.events.append((seq, bytes(frame)))
                reply.last_seq = seq
        reply.touched = now
        reply.writer_seen_at = time.time()
        if finished:
            reply.finished_at = now
            self._expire_later(reply, conversation_id, reply_id)  # sooner than abandonment
        reply.wake()

    def _expire_later(self, reply: _Reply, conversation_id: str, reply_id: str) -> None:
        expires_at = reply.expires_at(self.event_retention)
        heapq.heappush(self._expiry, (expires_at, (conversation_id, reply_id)))

    async def read_events(
        self, conversation_id: str, reply_id: str, after_seq: int = -1, wait: float = 0.0
    ) -> ReplyEvents:
        self._check_open()
        reply = self._reply(conversation_id, reply_id)
        if reply is None:
            return ReplyEvents([], finished=False, exists=False)
        if wait > 0 and reply.last_seq <= after_seq and reply.finished_at is None:
            changed = reply.changed
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                pass
            self._check_open()
            reply = self._reply(conversation_id, reply_id)
            if reply is None:
                return ReplyEvents([], finished=False, exists=False)
        start = bisect_right(reply.events, after_seq, key=_seq_of)
        return ReplyEvents(reply.events[start:], reply.finished_at is not None, exists=True)

    async def latest_reply(self, conversation_id: str) -> str | None:
        self._check_open()
        reply_id = self._latest.get(conversation_id)
        if reply_id is None or self._reply(conversation_id, reply_id) is None:
            return None
        return reply_id

    async def request_cancel(self, conversation_id: str, reply_id: str) -> None:
        self._check_open()
        reply = self._reply(conversation_id, reply_id)
        if reply is not None:
            reply.cancel_requested = True

    async def mark_reader(self, conversation_id: str, reply_id: str) -> None:
        self._check_open()
        reply = self._reply(conversation_id, reply_id)
        if reply is not None:
            reply.reader_seen_at = time.time()

    async def mark_writer(self, conversation_id: str, reply_id: str) -> None:
        self._check_open()
        reply = self._reply(conversation_id, reply_id)
        if reply is not None:
            reply.writer_seen_at = time.time()

    async def reply_control(self, conversation_id: str, reply_id: str) -> ReplyControl:
        self._check_open()
        reply = self._reply(conversation_id, reply_id)
        if reply is None:
            return ReplyControl(cancel_requested=False, reader_seen_at=None)
        return ReplyControl(reply.cancel_requested, reply.reader_seen_at, reply.writer_seen_at)

    async def append_many(self, appends: Sequence[LogAppend]) -> None:
        await _turns.append_many(self, appends)

    async def mark_writers(self, replies: Sequence[tuple[str, str]]) -> None:
        await _turns.mark_writers(self, replies)

    async def reply_controls(self, replies: Sequence[tuple[str, str]]) -> list[ReplyControl]:
        return await _turns.reply_controls(self, replies)

    # --- guards ------------------------------------------------------------------------------

    def _sweep_guards(self, now: float) -> None:
        self._guard_calls += 1
        if self._guard_calls % PRUNE_EVERY:
            return
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        self._idempotency = {k: v for k, v in self._idempotency.items() if v[1] > now}
        for key in [k for k, holders in self._slots.items() if not holders]:
            del self._slots[key]

    async def hit(self, key: str, window_seconds: float, limit: int) -> tuple[bool, float]:
        self._check_open()
        now = time.time()
        self._sweep_guards(now)
        count, ends = self._windows.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_seconds
        count += 1
        self._windows[key] = (count, ends)
        return count <= limit, ends - now

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_seconds: float) -> bool:
        self._check_open()
        now = time.time()
        holders = {h: t for h, t in self._slots.get(key, {}).items() if t > now}
        self._slots[key] = holders
        if holder not in holders and len(holders) >= limit:
            return False
        holders[holder] = now + lease_seconds
        return True

    async def release_slot(self, key: str, holder: str) -> None:
        self._check_open()
        self._slots.get(key, {}).pop(holder, None)

    async def remember_idempotency(
        self, key: str, fingerprint: str, ref: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        self._check_open()
        now = time.time()
        self._sweep_guards(now)
        kept = self._idempotency.get(key)
        if kept is not None and kept[1] > now:
            return kept[0]
        self._idempotency[key] = (IdempotencyRecord(fingerprint, ref), now + ttl_seconds)
        return None

    async def forget_idempotency(self, key: str) -> None:
        self._check_open()
        self._idempotency.pop(key, None)


def from_url(
    url: str, *, event_retention: float = 300.0, conversation_ttl: float = 0.0
) -> MemoryStore:
    """`memory://`, nothing more. `conversation_ttl` is a Redis feature: > 0 is refused."""
    if url != "memory://":
        raise ValueError(f"invalid memory store URL {url!r}: use memory://")
    check_retention(event_retention, conversation_ttl)
    if conversation_ttl:
        raise ValueError("conversation_ttl is only supported by the redis store")
    return MemoryStore(event_retention=event_retention)
