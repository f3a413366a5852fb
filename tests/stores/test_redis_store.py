"""RedisStore beyond the contract: key layout, TTLs, and a Redis that is down, hung or restarted.

Runs against real Redis: the shared server (a fresh key prefix per test) and,
for failures, a private `redis-server` that the test kills and starts again on
the same port. A hung Redis is a socket that accepts connections and never
answers. No mocks.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from chatbot_sse.domain import Message, Role, new_conversation_id, new_message_id
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores import create_store
from chatbot_sse.stores._retention import ABANDONED_AFTER
from chatbot_sse.stores.base import ReplyEvents
from chatbot_sse.stores.redis import RedisStore
from livesupport import free_port
from redissupport import RedisServer, delete_prefix, require_redis, unique_prefix

T0 = 1_700_000_000.0


def message(conversation_id: str, content: str = "hello") -> Message:
    return Message(new_message_id(), conversation_id, Role.USER, content, T0)


@pytest.fixture
def prefix() -> Iterator[str]:
    url = require_redis()
    name = unique_prefix()
    yield name
    delete_prefix(url, name)


@pytest.fixture
def raw(prefix: str) -> Iterator[redis.Redis]:
    """A plain client on the shared Redis, to look at what the store wrote."""
    client = redis.Redis.from_url(require_redis())
    yield client
    client.close()


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(require_redis(), prefix=prefix)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def keys_under(client: redis.Redis, prefix: str) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


async def fill_conversation(store: RedisStore) -> tuple[str, list[str]]:
    """A conversation with messages, two replies and control state: every kind of key."""
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, T0)
    await store.append_message(message(conversation_id))
    replies = [new_message_id(), new_message_id()]
    await store.append_events(conversation_id, replies[0], [(0, b"a")], finished=True)
    await store.append_events(conversation_id, replies[1], [(0, b"b")])
    await store.request_cancel(conversation_id, replies[1])
    await store.mark_reader(conversation_id, replies[1])
    return conversation_id, replies


# --- layout ----------------------------------------------------------------------------------


async def test_a_conversation_lives_in_one_hash_slot(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    conversation_id, (first, second) = await fill_conversation(store)
    base = f"{prefix}:{{{conversation_id}}}"
    assert keys_under(raw, prefix) == {
        f"{base}:conv",
        f"{base}:msgs",
        f"{base}:ids",
        f"{base}:latest",
        f"{base}:reply:{first}:events",
        f"{base}:reply:{first}:ctl",
        f"{base}:reply:{second}:events",
        f"{base}:reply:{second}:ctl",
    }
    slots = {key_slot(key.encode()) for key in keys_under(raw, prefix)}
    assert slots == {key_slot(conversation_id.encode())}
    other, _ = await fill_conversation(store)
    assert key_slot(other.encode()) in {key_slot(k.encode()) for k in keys_under(raw, prefix)}


async def test_reply_streams_use_the_seq_as_id(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    await store.append_events(conversation_id, reply_id, [(0, b"a"), (1, b"b")], finished=True)
    entries = raw.xrange(f"{prefix}:{{{conversation_id}}}:reply:{reply_id}:events")
    assert entries == [(b"0-1", {b"f": b"a"}), (b"0-2", {b"f": b"b"}), (b"1-0", {b"end": b"1"})]


async def test_prefixes_keep_deployments_apart(store: RedisStore, prefix: str) -> None:
    conversation_id, _ = await fill_conversation(store)
    neighbour = RedisStore(require_redis(), prefix=f"{prefix}-neighbour")
    await neighbour.open()
    try:
        assert await neighbour.get_conversation(conversation_id) is None
        assert await neighbour.latest_reply(conversation_id) is None
    finally:
        await neighbour.close()
        delete_prefix(require_redis(), f"{prefix}-neighbour")


async def test_store_url_options(prefix: str, raw: redis.Redis) -> None:
    url = require_redis()
    store = create_store(f"{url}?prefix={prefix}", conversation_ttl=60, event_retention=1)
    await store.open()
    try:
        conversation_id = new_conversation_id()
        await store.create_conversation(conversation_id, T0)
        assert 0 < raw.pttl(f"{prefix}:{{{conversation_id}}}:conv") <= 60_000
    finally:
        await store.close()


# --- TTLs ------------------------------------------------------------------------------------


async def test_no_conversation_ttl_by_default(
    store: RedisStore, raw: redis.Redis, prefix: str
) -> None:
    conversation_id, (finished, running) = await fill_conversation(store)
    base = f"{prefix}:{{{conversation_id}}}"
    for name in ("conv", "msgs", "ids", "latest"):
        assert raw.pttl(f"{base}:{name}") == -1, name
    for name in ("events", "ctl"):
        assert 0 < raw.pttl(f"{base}:reply:{finished}:{name}") <= 300_000
        assert 300_000 < raw.pttl(f"{base}:reply:{running}:{name}") <= ABANDONED_AFTER * 1000


async def test_conversation_ttl_is_set_and_refreshed_by_writes(
    prefix: str, raw: redis.Redis
) -> None:
    store = RedisStore(require_redis(), prefix=prefix, conversation_ttl=60)
    await store.open()
    try:
        conversation_id, _ = await fill_conversation(store)
        base = f"{prefix}:{{{conversation_id}}}"
        names = [f"{base}:{name}" for name in ("conv", "msgs", "ids", "latest")]
        for key in names:
            assert 55_000 < raw.pttl(key) <= 60_000, key
            raw.pexpire(key, 5_000)
        await store.append_message(message(conversation_id, "again"))
        for key in names:
            assert 55_000 < raw.pttl(key) <= 60_000, key
    finally:
        await store.close()


async def test_a_conversation_expires_after_its_ttl(prefix: str) -> None:
    store = RedisStore(require_redis(), prefix=prefix, conversation_ttl=0.2)
    await store.open()
    try:
        conversation_id = new_conversation_id()
        await store.create_conversation(conversation_id, T0)
        await store.append_message(message(conversation_id))
        await asyncio.sleep(0.1)
        await store.append_message(message(conversation_id))  # refreshes: 0.2 s from now
        await asyncio.sleep(0.15)
        assert len(await store.history(conversation_id)) == 2
        await asyncio.sleep(0.2)
        assert await store.get_conversation(conversation_id) is None
        assert await store.history(conversation_id) == []
    finally:
        await store.close()


# --- failures --------------------------------------------------------------------------------


async def test_unreachable_redis_fails_fast_and_clearly() -> None:
    port = free_port()
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}") as caught:
        await store.open()
    assert time.monotonic() - start < 1
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()
    await store.close()


async def test_hung_redis_times_out(hung_port: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{hung_port}/0", socket_timeout=0.3)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"[Tt]imeout"):
        await store.open()
    assert time.monotonic() - start < 2


async def test_a_store_that_could_not_open_opens_once_redis_is_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = RedisStore(server.url)
    with pytest.raises(StoreUnavailable):
        await store.open()
    server.start()
    try:
        await store.open()
        await store.ping()
        await store.close()
    finally:
        server.stop()


async def test_redis_restart_fails_fast_then_recovers(server: RedisServer) -> None:
    store = RedisStore(server.url)
    await store.open()
    try:
        conversation_id = new_conversation_id()
        await store.create_conversation(conversation_id, T0)
        await store.append_message(message(conversation_id))  # the scripts are now loaded
        server.stop()

        calls: list[Any] = [
            store.ping(),
            store.get_conversation(conversation_id),
            store.append_message(message(conversation_id)),
            store.history(conversation_id),
            store.append_events(conversation_id, "r", [(0, b"x")]),
            store.read_events(conversation_id, "r", wait=2),
            store.latest_reply(conversation_id),
        ]
        for call in calls:
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await call
            assert time.monotonic() - start < 1

        server.start()  # no persistence: an empty Redis, without the scripts
        await store.ping()
        await store.create_conversation(conversation_id, T0)
        sent = message(conversation_id, "after the restart")
        await store.append_message(sent)
        assert await store.history(conversation_id) == [sent]
        await store.append_events(conversation_id, "r", [(0, b"x")], finished=True)
        assert await store.read_events(conversation_id, "r") == ReplyEvents([(0, b"x")], True, True)
    finally:
        await store.close()


async def test_a_wait_ends_when_redis_goes_away(server: RedisServer) -> None:
    store = RedisStore(server.url)
    await store.open()
    try:
        conversation_id, reply_id = new_conversation_id(), new_message_id()
        await store.append_events(conversation_id, reply_id, [(0, b"x")])
        reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=10))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        server.stop()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(reader, 3)
        assert time.monotonic() - start < 1
    finally:
        await store.close()


async def test_waits_longer_than_the_socket_timeout(prefix: str) -> None:
    """`XREAD BLOCK` runs in slices, so a long wait never trips the socket timeout."""
    store = RedisStore(require_redis(), prefix=prefix, socket_timeout=0.3)
    await store.open()
    try:
        conversation_id, reply_id = new_conversation_id(), new_message_id()
        await store.append_events(conversation_id, reply_id, [(0, b"x")])
        start = time.monotonic()
        result = await store.read_events(conversation_id, reply_id, 0, wait=0.5)
        assert result == ReplyEvents([], finished=False, exists=True)
        assert 0.45 <= time.monotonic() - start < 1.5
        reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=2))
        await asyncio.sleep(0.4)
        await store.append_events(conversation_id, reply_id, [(1, b"y")], finished=True)
        assert await asyncio.wait_for(reader, 1) == ReplyEvents([(1, b"y")], True, True)
    finally:
        await store.close()
