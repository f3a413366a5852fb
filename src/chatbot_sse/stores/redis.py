"""RedisStore: conversations and reply logs in Redis, shared by every worker and instance.

The data layout and the Lua scripts are in `_redis_layout` (one conversation,
one hash slot: Redis Cluster-ready); the pool and its failure rules are in
`_redis_client` (timeouts, StoreUnavailable, recovery when Redis is back).
Writes that must be atomic (create, append to an existing conversation,
append events) are Lua scripts, which redis-py reloads by itself after a Redis
restart (`NOSCRIPT`).

Waiting for a reply's events is `XREAD BLOCK` on its stream, in slices shorter
than the socket timeout; a wait in progress when the store closes ends with
`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import parse_url

from chatbot_sse.domain import Conversation, Message
from chatbot_sse.errors import ConversationNotFound, TurnInProgress
from chatbot_sse.stores import _redis_layout as layout
from chatbot_sse.stores._redis_client import RedisClient
from chatbot_sse.stores._retention import ABANDONED_AFTER, check_retention
from chatbot_sse.stores.base import (
    HistoryPage,
    IdempotencyRecord,
    LogAppend,
    ReplyControl,
    ReplyEvents,
    check_page,
)

__all__ = ["RedisStore", "from_url"]

PIPELINE_CHUNK = 500  # commands per pipeline of the batched heartbeats and control reads
CONTROL_FIELDS = ["cancel", "reader", "writer"]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore:
    """A `Store` in one Redis database.

    `prefix` starts every key, so several deployments (or tests) can share a
    database. `event_retention`: seconds a finished reply's events are kept.
    `conversation_ttl`: seconds after its last write a conversation expires (0: never).
    Timeouts are in seconds; `socket_timeout` bounds every reply from Redis.
    """

    backend = "redis"
    reconnects = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "chatbot",
        event_retention: float = 300.0,
        conversation_ttl: float = 0.0,
        connect_timeout: float = 2.0,
        socket_timeout: float = 5.0,
        health_check_interval: float = 15.0,
    ) -> None:
        check_retention(event_retention, conversation_ttl)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"invalid Redis key prefix {prefix!r}: non-empty, without braces")
        parts = urlsplit(url)
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(
                f"invalid Redis URL {redacted(url)!r}: the path is the database number"
            )
        try:
            parse_url(url)
            where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db or 0}"
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {redacted(url)!r}: {exc}") from None
        self.url = url
        self.where = where
        self.prefix = prefix
        self.event_retention = event_retention
        self.conversation_ttl = conversation_ttl
        self._conversation_ttl_ms = _ms(conversation_ttl) if conversation_ttl else 0
        self._block_slice = max(0.1, socket_timeout - 1.0)
        self._redis = RedisClient(
            url,
            self.where,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=health_check_interval,
        )

    async def open(self) -> None:
        """Create the pool and check that Redis answers: StoreUnavailable if not (retry later)."""
        await self._redis.open()

    async def close(self) -> None:
        await self._redis.close()

    async def ping(self) -> None:
        async with self._redis.use() as client:
            await client.ping()

    def _keys(self, conversation_id: str) -> layout.Keys:
        return layout.Keys(self.prefix, conversation_id)

    # --- conversations ----------------------------------------------------------------------

    async def create_conversation(
        self, conversation_id: str, created_at: float, owner: str = ""
    ) -> Conversation:
        keys = self._keys(conversation_id)
        async with self._redis.use():
            created = await self._redis.scripts["create"](
                keys=[keys.conv], args=[repr(created_at), self._conversation_ttl_ms, owner]
            )
        if not created:
            raise ValueError(f"conversation {conversation_id!r} already exists")
        return Conversation(conversation_id, created_at, owner)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        async with self._redis.use() as client:
            raw, owner = await client.hmget(
                self._keys(conversation_id).conv, ["created_at", "owner"]
            )
        if raw is None:
            return None
        owner_text = owner.decode() if isinstance(owner, bytes) else owner or ""
        return Conversation(conversation_id, float(raw), owner_text)

    async def append_message(self, message: Message) -> None:
        encoded = layout.encode_message(message)
        keys = self._keys(message.conversation_id)
        async with self._redis.use(), self._redis.in_order(keys.base):
            outcome = await self._redis.scripts["message"](
                keys=keys.turn(), args=[message.id, encoded, self._conversation_ttl_ms]
            )
        _raise_for(outcome, message.conversation_id, message.id)

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        async with self._redis.use() as client:
            if limit == 0:
                return []
            raw = await client.lrange(self._keys(conversation_id).msgs, -limit if limit else 0, -1)
        return [layout.decode_message(conversation_id, item) for item in raw]

    async def history_page(
        self, conversation_id: str, limit: int, before: int | None = None
    ) -> HistoryPage:
        check_page(limit, before)  # the script trusts them
        keys = self._keys(conversation_id)
        async with self._redis.use():
            start, *raw = await self._redis.scripts["history_page"](
                keys=[keys.msgs], args=[limit, -1 if before is None else before]
            )
        return HistoryPage([layout.decode_message(conversation_id, item) for item in raw], start)

    async def delete_conversation(self, conversation_id: str) -> bool:
        keys = self._keys(conversation_id)
        async with self._redis.use(), self._redis.in_order(keys.base):
            deleted = await self._redis.scripts["delete"](keys=keys.turn())
        return bool(deleted)

    # --- the reply log ----------------------------------------------------------------------

    async def begin_turn(
        self,
        message: Message,
        reply_id: str,
        *,
        create: bool,
        owner: str | None,
        history_limit: int,
    ) -> list[Message]:
        """One script: the conversation created (or checked), the message, the reply's entry."""
        conversation_id = message.conversation_id
        keys = self._keys(conversation_id)
        args = [
            1 if create else 0,
            repr(message.created_at),
            self._conversation_ttl_ms,
            owner or "",
            0 if owner is None else 1,
            message.id,
            layout.encode_message(message),
            reply_id,
            _ms(ABANDONED_AFTER),
            _ms(self.event_retention),
            max(0, history_limit),
        ]
        turn_keys = [*keys.turn(), keys.events(reply_id), keys.control(reply_id)]
        async with self._redis.use(), self._redis.in_order(keys.base):
            code, *history = await self._redis.scripts["begin"](keys=turn_keys, args=args)
        if code == 1:  # the words of every store's begin_turn: clients see them in the 404
            raise ConversationNotFound(f"conversation {conversation_id} does not exist")
        if code == 4:
            busy = history[0]
            raise TurnInProgress(
                conversation_id, busy.decode() if isinstance(busy, bytes) else busy
            )
        _raise_for(code, conversation_id, message.id)
        if create:  # nothing before it: nothing read
            return [message] if history_limit > 0 else []
        return [layout.decode_message(conversation_id, raw) for raw in history]

    async def finish_turn(self, reply: Message, events: Sequence[tuple[int, bytes]]) -> None:
        """One script: the reply and its last events, the log marked finished; both or neither."""
        keys = self._keys(reply.conversation_id)
        events_key = keys.events(reply.id)
        args: list[Any] = [
            reply.id,
            layout.encode_message(reply),
            self._conversation_ttl_ms,
            reply.id,
            _ms(ABANDONED_AFTER),
            _ms(self.event_retention),
        ]
        for seq, frame in events:
            args += (seq, frame)
        turn_keys = [*keys.turn(), events_key, keys.control(reply.id)]
        async with (
            self._redis.use(),
            self._redis.in_order(keys.base),
            self._redis.in_order(events_key),
        ):
            code = await self._redis.scripts["finish"](keys=turn_keys, args=args)
        _raise_for(code, reply.conversation_id, reply.id)

    async def append_events(
        self,
        conversation_id: str,
        reply_id: str,
        events: Sequence[tuple[int, bytes]],
        finished: bool = False,
    ) -> None:
        keys = self._keys(conversation_id)
        events_key = keys.events(reply_id)
        args: list[Any] = [
            reply_id,
            1 if finished else 0,
            _ms(ABANDONED_AFTER),
            _ms(self.event_retention),
            self._conversation_ttl_ms,
        ]
        for seq, frame in events:
            args += (seq, frame)
        async with self._redis.use(), self._redis.in_order(events_key):
            await self._redis.scripts["events"](
                keys=[events_key, keys.control(reply_id), keys.latest], args=args
            )

    async def _read(self, keys: layout.Keys, reply_id: str, after_seq: int) -> ReplyEvents:
        first = layout.stream_id(after_seq + 1)  # XRANGE is inclusive: from seq after_seq + 1
        async with self._redis.use() as client, client.pipeline(transaction=True) as pipe:
            pipe.exists(keys.control(reply_id))
            pipe.xrange(keys.events(reply_id), min=first)
            exists, entries = await pipe.execute()
        if not exists:
            return ReplyEvents([], finished=False, exists=False)
        events, finished = layout.parse_entries(entries)
        return ReplyEvents(events, finished, exists=True)

    async def read_events(
        self, conversation_id: str, reply_id: str, after_seq: int = -1, wait: float = 0.0
    ) -> ReplyEvents:
        keys = self._keys(conversation_id)
        deadline = time.monotonic() + wait
        result = await self._read(keys, reply_id, after_seq)
        while result.exists and not (result.events or result.finished):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            entries = await self._redis.block_read(
                keys.events(reply_id),
                layout.stream_id(after_seq),
                min(remaining, self._block_slice),
            )
            if entries:
                events, finished = layout.parse_entries(entries)
                return ReplyEvents(events, finished, exists=True)
            result = await self._read(keys, reply_id, after_seq)  # expired meanwhile?
        return result

    async def latest_reply(self, conversation_id: str) -> str | None:
        keys = self._keys(conversation_id)
        async with self._redis.use() as client:
            raw = await client.get(keys.latest)
            if raw is None:
                return None
            reply_id = raw.decode() if isinstance(raw, bytes) else raw
            kept = await client.exists(keys.control(reply_id))
        return reply_id if kept else None

    async def _set_control(
        self, conversation_id: str, reply_id: str, field: str, value: str
    ) -> None:
        key = self._keys(conversation_id).control(reply_id)
        async with self._redis.use():
            await self._redis.scripts["control"](keys=[key], args=[field, value])

    async def request_cancel(self, conversation_id: str, reply_id: str) -> None:
        await self._set_control(conversation_id, reply_id, "cancel", "1")

    async def mark_reader(self, conversation_id: str, reply_id: str) -> None:
        await self._set_control(conversation_id, reply_id, "reader", repr(time.time()))

    async def mark_writer(self, conversation_id: str, reply_id: str) -> None:
        await self._set_control(conversation_id, reply_id, "writer", repr(time.time()))

    async def reply_control(self, conversation_id: str, reply_id: str) -> ReplyControl:
        key = self._keys(conversation_id).control(reply_id)
        async with self._redis.use() as client:
            return _control(*await client.hmget(key, CONTROL_FIELDS))

    # --- guards ----------------------------------------------------------------------------

    # The batched log calls. Appends: one script call per reply, sent concurrently, each on a
    # connection of its own (a reply's appends keep their order through `in_order`). Heartbeats
    # and controls: pipelines of `PIPELINE_CHUNK` commands, one round trip each.
    async def append_many(self, appends: Sequence[LogAppend]) -> None:
        await asyncio.gather(
            *(
                self.append_events(a.conversation_id, a.reply_id, a.events, a.finished)
                for a in appends
            )
        )

    async def mark_writers(self, replies: Sequence[tuple[str, str]]) -> None:
        now = repr(time.time())
        for start in range(0, len(replies), PIPELINE_CHUNK):
            async with self._redis.use() as client, client.pipeline(transaction=False) as pipe:
                script = self._redis.scripts["control"]
                for conversation_id, reply_id in replies[start : start + PIPELINE_CHUNK]:
                    key = self._keys(conversation_id).control(reply_id)
                    await script(keys=[key], args=["writer", now], client=pipe)
                await pipe.execute()

    async def reply_controls(self, replies: Sequence[tuple[str, str]]) -> list[ReplyControl]:
        controls: list[ReplyControl] = []
        for start in range(0, len(replies), PIPELINE_CHUNK):
            async with self._redis.use() as client, client.pipeline(transaction=False) as pipe:
                for conversation_id, reply_id in replies[start : start + PIPELINE_CHUNK]:
                    pipe.hmget(self._keys(conversation_id).control(reply_id), CONTROL_FIELDS)
                rows = await pipe.execute()
            controls += (_control(*row) for row in rows)
        return controls

    async def hit(self, key: str, window_seconds: float, limit: int) -> tuple[bool, float]:
        counter = layout.guard_key(self.prefix, "rate", key)
        async with self._redis.use():
            count, left_ms = await self._redis.scripts["hit"](
                keys=[counter], args=[_ms(window_seconds)]
            )
        return int(count) <= limit, int(left_ms) / 1000

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_seconds: float) -> bool:
        slots = layout.guard_key(self.prefix, "slots", key)
        now_ms = round(time.time() * 1000)
        async with self._redis.use():
            taken = await self._redis.scripts["acquire"](
                keys=[slots], args=[holder, limit, now_ms, _ms(lease_seconds)]
            )
        return bool(taken)

    async def release_slot(self, key: str, holder: str) -> None:
        async with self._redis.use() as client:
            await client.zrem(layout.guard_key(self.prefix, "slots", key), holder)

    async def remember_idempotency(
        self, key: str, fingerprint: str, ref: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        record = layout.guard_key(self.prefix, "idem", key)
        async with self._redis.use():
            kept = await self._redis.scripts["remember"](
                keys=[record], args=[f"{fingerprint} {ref}", _ms(ttl_seconds)]
            )
        if kept is None:
            return None
        text = kept.decode() if isinstance(kept, bytes) else str(kept)
        kept_fingerprint, _, kept_ref = text.partition(" ")
        return IdempotencyRecord(kept_fingerprint, kept_ref)

    async def forget_idempotency(self, key: str) -> None:
        async with self._redis.use() as client:
            await client.delete(layout.guard_key(self.prefix, "idem", key))


def from_url(
    url: str, *, event_retention: float = 300.0, conversation_ttl: float = 0.0
) -> RedisStore:
    """`redis://[[user]:password@]host[:port][/db][?prefix=name&…]`, or `rediss://` for TLS.

    `prefix` (default `chatbot`) starts every key; other query options are
    redis-py's own (e.g. `health_check_interval`, `ssl_cert_reqs`).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    if len(prefixes) > 1:
        raise ValueError(f"invalid Redis URL {redacted(url)!r}: prefix given more than once")
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return RedisStore(
        urlunsplit(parts._replace(query=rest)),
        prefix=prefixes[0] if prefixes else "chatbot",
        event_retention=event_retention,
        conversation_ttl=conversation_ttl,
    )


def _control(cancel: Any, reader: Any, writer: Any) -> ReplyControl:
    """A reply's control hash, as `HMGET ... cancel reader writer` gives it."""
    return ReplyControl(
        cancel is not None,
        None if reader is None else float(reader),
        None if writer is None else float(writer),
    )


def redacted(url: str) -> str:
    """`url` without its password: what error messages and logs may show of a STORE_URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _raise_for(code: int, conversation_id: str, message_id: str) -> None:
    """The error a turn script's code stands for (0: none)."""
    if code == 1:
        raise ConversationNotFound(f"conversation {conversation_id!r} not found")
    if code == 2:
        raise ValueError(f"message {message_id!r} already exists")
    if code == 3:
        raise ValueError(f"conversation {conversation_id!r} already exists")
