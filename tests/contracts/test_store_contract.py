"""The Store contract: what the turn service and the routes rely on, checked against every store.

The backends (memory, SQLite, Redis) and the `store`/`make_store` fixtures are
in `conftest.py`; the reply log's contract is in `test_reply_log_contract.py`.

Also here: the registry (`create_store`) that turns a `STORE_URL` into a store.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot_sse.domain import (
    Message,
    MessageStatus,
    Role,
    new_conversation_id,
    new_message_id,
)
from chatbot_sse.errors import ConversationNotFound, StoreUnavailable
from chatbot_sse.stores import BUILTIN_STORES, Store, create_store
from chatbot_sse.stores.memory import MemoryStore
from chatbot_sse.stores.redis import RedisStore
from chatbot_sse.stores.sqlite import SQLiteStore

StoreFactory = Callable[..., Store]

T0 = 1_700_000_000.0
_clock = itertools.count()


def message(
    conversation_id: str,
    content: str = "hello",
    role: Role = Role.USER,
    status: MessageStatus = MessageStatus.COMPLETE,
    meta: dict[str, Any] | None = None,
) -> Message:
    created_at = T0 + next(_clock) / 1000
    return Message(new_message_id(), conversation_id, role, content, created_at, status, meta or {})


async def new_conversation(store: Store) -> str:
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, T0)
    return conversation_id


def test_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.backend, str)
    assert store.backend
    assert store.reconnects is (store.backend == "redis")  # only a network service comes back


async def test_create_then_get(store: Store) -> None:
    conversation_id = new_conversation_id()
    created = await store.create_conversation(conversation_id, 1_700_000_123.456789)
    assert created.id == conversation_id
    assert created.created_at == 1_700_000_123.456789
    assert await store.get_conversation(conversation_id) == created
    assert await store.history(conversation_id) == []


async def test_owner_round_trips(store: Store) -> None:
    """A conversation belongs to whoever created it (a key's hash); "" when nobody in particular."""
    owned, unowned = new_conversation_id(), new_conversation_id()
    created = await store.create_conversation(owned, T0, owner="3f2a9c0d11e4b6a7")
    assert created.owner == "3f2a9c0d11e4b6a7"
    assert await store.get_conversation(owned) == created
    await store.create_conversation(unowned, T0)
    got = await store.get_conversation(unowned)
    assert got is not None
    assert got.owner == ""


async def test_get_unknown_is_none(store: Store) -> None:
    assert await store.get_conversation(new_conversation_id()) is None
    assert await store.history(new_conversation_id()) == []


async def test_create_existing_id_raises_value_error(store: Store) -> None:
    conversation_id = await new_conversation(store)
    await store.append_message(message(conversation_id))
    with pytest.raises(ValueError, match="already exists"):
        await store.create_conversation(conversation_id, T0 + 1)
    assert (await store.get_conversation(conversation_id)) is not None
    assert len(await store.history(conversation_id)) == 1


async def test_append_and_history_oldest_first(store: Store) -> None:
    conversation_id = await new_conversation(store)
    sent = [message(conversation_id, f"turn {i}", Role.USER if i % 2 else Role.ASSISTANT) for i in range(7)]  # fmt: skip
    for m in sent:
        await store.append_message(m)
    assert await store.history(conversation_id) == sent


async def test_history_limit_keeps_the_newest_oldest_first(store: Store) -> None:
    conversation_id = await new_conversation(store)
    sent = [message(conversation_id, f"m{i}") for i in range(5)]
    for m in sent:
        await store.append_message(m)
    assert await store.history(conversation_id, limit=2) == sent[3:]
    assert await store.history(conversation_id, limit=1) == sent[4:]
    assert await store.history(conversation_id, limit=5) == sent
    assert await store.history(conversation_id, limit=50) == sent
    assert await store.history(conversation_id, limit=0) == []
    assert await store.history(conversation_id, limit=None) == sent
    with pytest.raises(ValueError, match="limit"):
        await store.history(conversation_id, limit=-1)


async def test_history_pages_walk_back_from_the_newest(store: Store) -> None:
    conversation_id = await new_conversation(store)
    sent = [message(conversation_id, f"m{i}") for i in range(7)]
    for m in sent:
        await store.append_message(m)
    newest = await store.history_page(conversation_id, limit=3)
    assert (newest.messages, newest.start) == (sent[4:], 4)
    middle = await store.history_page(conversation_id, limit=3, before=newest.start)
    assert (middle.messages, middle.start) == (sent[1:4], 1)
    oldest = await store.history_page(conversation_id, limit=3, before=middle.start)
    assert (oldest.messages, oldest.start) == (sent[:1], 0)
    assert (await store.history_page(conversation_id, limit=3, before=0)).messages == []
    everything = await store.history_page(conversation_id, limit=100)
    assert (everything.messages, everything.start) == (sent, 0)
    beyond = await store.history_page(conversation_id, limit=2, before=50)  # past the end
    assert (beyond.messages, beyond.start) == (sent[5:], 5)
    # A page's index stays valid as the conversation grows at its end.
    await store.append_message(message(conversation_id, "later"))
    again = await store.history_page(conversation_id, limit=3, before=newest.start)
    assert (again.messages, again.start) == (sent[1:4], 1)
    unknown = await store.history_page(new_conversation_id(), limit=3)
    assert (unknown.messages, unknown.start) == ([], 0)
    for bad in ({"limit": 0}, {"limit": -1}, {"limit": 2, "before": -1}):
        with pytest.raises(ValueError, match=r"limit|before"):
            await store.history_page(conversation_id, **bad)


async def test_delete_conversation_removes_it_and_its_replies(store: Store) -> None:
    conversation_id, kept = await new_conversation(store), await new_conversation(store)
    user = message(conversation_id, "hi")
    await store.append_message(user)
    reply = message(conversation_id, "a", Role.ASSISTANT)
    finished, running = reply.id, new_message_id()  # a stored reply's log has its message's id
    await store.append_events(conversation_id, finished, [(0, b"data: a\n\n")], finished=True)
    await store.append_message(reply)
    await store.append_events(conversation_id, running, [(0, b"data: b\n\n")])
    other = message(kept, "stays")
    await store.append_message(other)
    await store.append_events(kept, new_message_id(), [(0, b"data: c\n\n")])

    assert await store.delete_conversation(conversation_id) is True
    assert await store.get_conversation(conversation_id) is None
    assert await store.history(conversation_id) == []
    for reply_id in (finished, running):
        assert not (await store.read_events(conversation_id, reply_id)).exists
    assert await store.latest_reply(conversation_id) is None
    assert await store.delete_conversation(conversation_id) is False  # gone already
    assert await store.delete_conversation(new_conversation_id()) is False
    with pytest.raises(ConversationNotFound):
        await store.append_message(message(conversation_id, "too late"))
    # Its message ids are free again, and other conversations are untouched.
    await store.create_conversation(conversation_id, T0)
    await store.append_message(user)
    assert await store.history(conversation_id) == [user]
    assert await store.history(kept) == [other]
    assert await store.latest_reply(kept) is not None


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("status", list(MessageStatus))
async def test_roles_and_statuses_round_trip(
    store: Store, role: Role, status: MessageStatus
) -> None:
    conversation_id = await new_conversation(store)
    sent = message(conversation_id, "x", role, status)
    await store.append_message(sent)
    (got,) = await store.history(conversation_id)
    assert got == sent
    assert type(got.role) is Role
    assert type(got.status) is MessageStatus


@pytest.mark.parametrize(
    "content",
    [
        "",
        "plain",
        "line one\nline two\r\nthree\rfour\n",
        "unicode: héllo wörld 你好 🤖👍🏽 \u200b\u202e rtl",
        "nul \x00 and controls \x01\x1f\x7f",
        "quotes ' \" ; -- DROP TABLE messages; /* */",
        "x" * 10_000,
        "🙂" * 10_000,
    ],
    ids=["empty", "plain", "newlines", "unicode", "controls", "sql", "10k-ascii", "10k-emoji"],
)
async def test_content_round_trips_exactly(store: Store, content: str) -> None:
    conversation_id = await new_conversation(store)
    sent = message(conversation_id, content)
    await store.append_message(sent)
    assert await store.history(conversation_id) == [sent]


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"finish_reason": "stop"},
        {"usage": {"prompt_tokens": 3, "completion_tokens": 5}, "tags": ["a", "é", "🤖"]},
        {"nested": {"list": [1, 2.5, None, True, False, "", {"k": []}]}, "big": 2**62},
        {"line\nbreak": "value\nwith\nlines", "": "empty key"},
    ],
)
async def test_meta_round_trips_exactly(store: Store, meta: dict[str, Any]) -> None:
    conversation_id = await new_conversation(store)
    sent = message(conversation_id, "with meta", Role.ASSISTANT, meta=meta)
    await store.append_message(sent)
    (got,) = await store.history(conversation_id)
    assert got == sent
    assert got.meta == meta


async def test_stored_meta_is_a_copy(store: Store) -> None:
    conversation_id = await new_conversation(store)
    meta: dict[str, Any] = {"finish_reason": "stop"}
    await store.append_message(message(conversation_id, meta=meta))
    meta["finish_reason"] = "changed"
    (got,) = await store.history(conversation_id)
    got.meta["finish_reason"] = "changed too"
    (again,) = await store.history(conversation_id)
    assert again.meta == {"finish_reason": "stop"}


async def test_meta_must_be_json(store: Store) -> None:
    conversation_id = await new_conversation(store)
    with pytest.raises(TypeError):
        await store.append_message(message(conversation_id, meta={"not json": {1, 2}}))
    assert await store.history(conversation_id) == []


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    content=st.text(max_size=300),
    meta=st.dictionaries(
        st.text(max_size=10),
        st.text(max_size=20)
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False),
        max_size=3,
    ),
)
async def test_any_text_round_trips(store: Store, content: str, meta: dict[str, Any]) -> None:
    conversation_id = await new_conversation(store)
    sent = message(conversation_id, content, meta=meta)
    await store.append_message(sent)
    assert await store.history(conversation_id) == [sent]


async def test_content_must_be_valid_unicode(store: Store) -> None:
    """A lone surrogate can't be encoded as UTF-8; the API must reject it before it gets here."""
    conversation_id = await new_conversation(store)
    with pytest.raises(ValueError, match="surrogate"):
        await store.append_message(message(conversation_id, "half an emoji \ud83e"))
    assert await store.history(conversation_id) == []


async def test_append_to_unknown_conversation(store: Store) -> None:
    unknown = new_conversation_id()
    with pytest.raises(ConversationNotFound):
        await store.append_message(message(unknown))
    assert await store.get_conversation(unknown) is None
    assert await store.history(unknown) == []


async def test_duplicate_message_id_raises_value_error(store: Store) -> None:
    conversation_id = await new_conversation(store)
    first = message(conversation_id, "first")
    await store.append_message(first)
    with pytest.raises(ValueError, match="already exists"):
        await store.append_message(Message(first.id, conversation_id, Role.USER, "again", T0))
    assert await store.history(conversation_id) == [first]


async def test_concurrent_appends_keep_every_message(store: Store) -> None:
    conversations = [await new_conversation(store) for _ in range(3)]
    sent = [message(conversations[i % 3], f"m{i}") for i in range(90)]
    await asyncio.gather(*(store.append_message(m) for m in sent))
    for conversation_id in conversations:
        expected = [m for m in sent if m.conversation_id == conversation_id]
        got = await store.history(conversation_id)
        assert len(got) == 30
        assert sorted(got, key=lambda m: m.id) == sorted(expected, key=lambda m: m.id)


async def test_concurrent_creates_of_one_id_let_exactly_one_win(store: Store) -> None:
    conversation_id = new_conversation_id()
    results = await asyncio.gather(
        *(store.create_conversation(conversation_id, T0 + i) for i in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ValueError) for r in results if r not in winners)
    assert await store.get_conversation(conversation_id) == winners[0]


async def test_conversations_are_isolated(store: Store) -> None:
    a, b = await new_conversation(store), await new_conversation(store)
    sent_a, sent_b = [], []
    for i in range(4):
        sent_a.append(message(a, f"a{i}"))
        sent_b.append(message(b, f"b{i}"))
        await store.append_message(sent_a[-1])
        await store.append_message(sent_b[-1])
    assert await store.history(a) == sent_a
    assert await store.history(b) == sent_b
    assert await store.history(a, limit=2) == sent_a[2:]


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_data_outlives_the_store_object(make_store: StoreFactory, store: Store) -> None:
    if store.backend == "memory":
        pytest.skip("a memory store's data lives and dies with the object")
    conversation_id = await new_conversation(store)
    sent = message(conversation_id, "kept")
    await store.append_message(sent)
    other = make_store()
    await other.open()
    try:
        assert await other.get_conversation(conversation_id) is not None
        assert await other.history(conversation_id) == [sent]
    finally:
        await other.close()


async def test_calls_before_open_raise_store_unavailable(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.get_conversation(new_conversation_id())
    await store.close()


async def test_close_is_idempotent_and_final(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    conversation_id = await new_conversation(store)
    await store.close()
    await store.close()
    calls = [
        store.ping(),
        store.create_conversation(new_conversation_id(), T0),
        store.get_conversation(conversation_id),
        store.append_message(message(conversation_id)),
        store.history(conversation_id),
        store.open(),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="closed"):
            await call
    await asyncio.gather(store.close(), store.close())


async def test_close_runs_pending_writes_first(make_store: StoreFactory) -> None:
    store = make_store()
    await store.open()
    conversation_id = await new_conversation(store)
    sent = [message(conversation_id, f"m{i}") for i in range(20)]
    writes = [asyncio.ensure_future(store.append_message(m)) for m in sent]
    await asyncio.sleep(0)
    await store.close()
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(r is None for r in results)
    if store.backend != "memory":
        reopened = make_store()
        await reopened.open()
        try:
            assert await reopened.history(conversation_id) == sent
        finally:
            await reopened.close()


# --- the registry ---------------------------------------------------------------------------


async def test_create_store_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(create_store("memory://"), MemoryStore)
    absolute = create_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "abs.db"
    monkeypatch.chdir(tmp_path)
    relative = create_store("sqlite:///data/chatbot.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path("data/chatbot.db")
    assert not (tmp_path / "data").exists(), "nothing may touch the disk before open()"
    await relative.open()
    try:
        assert (tmp_path / "data" / "chatbot.db").is_file()
    finally:
        await relative.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgres://localhost/db", "unsupported store URL"),
        ("chatbot.db", "unsupported store URL"),
        ("sqlite://", "invalid SQLite URL"),
        ("sqlite:///", "invalid SQLite URL"),
        ("sqlite://host/chatbot.db", "invalid SQLite URL"),
        ("sqlite:///chatbot.db?mode=ro", "invalid SQLite URL"),
        ("memory://something", "invalid memory store URL"),
    ],
)
def test_create_store_rejects_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_store(url)


@pytest.mark.parametrize(
    ("url", "where", "prefix"),
    [
        ("redis://localhost:6379/0", "localhost:6379/0", "chatbot"),
        ("rediss://:secret@cache.example:6380/1", "cache.example:6380/1", "chatbot"),
        ("redis://127.0.0.1?prefix=blue", "127.0.0.1:6379/0", "blue"),
        ("redis://h:7000/3?prefix=a-b&health_check_interval=5", "h:7000/3", "a-b"),
    ],
)
def test_create_store_redis_is_lazy(url: str, where: str, prefix: str) -> None:
    """No connection before open(); the password never shows in `where` (logs, errors)."""
    store = create_store(url, event_retention=12.5, conversation_ttl=60)
    assert isinstance(store, RedisStore)
    assert (store.backend, store.where, store.prefix) == ("redis", where, prefix)
    assert (store.event_retention, store.conversation_ttl) == (12.5, 60)
    assert "prefix" not in store.url


async def test_create_store_passes_event_retention(tmp_path: Path) -> None:
    memory = create_store("memory://", event_retention=7)
    sqlite = create_store(f"sqlite:///{tmp_path}/x.db", event_retention=8)
    assert isinstance(memory, MemoryStore)
    assert isinstance(sqlite, SQLiteStore)
    assert (memory.event_retention, sqlite.event_retention) == (7, 8)
    assert create_store("memory://").event_retention == 300  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("memory://", {"conversation_ttl": 60}, "only supported by the redis store"),
        ("sqlite:///x.db", {"conversation_ttl": 60}, "only supported by the redis store"),
        ("memory://", {"event_retention": 0}, "event_retention"),
        ("sqlite:///x.db", {"event_retention": -1}, "event_retention"),
        ("redis://localhost", {"event_retention": 0}, "event_retention"),
        ("redis://localhost", {"conversation_ttl": -1}, "conversation_ttl"),
        ("redis://localhost/zero", {}, "database number"),
        ("redis://localhost?prefix={x}", {}, "prefix"),
        ("redis://localhost?prefix=", {}, "prefix"),
        ("redis://localhost?prefix=a&prefix=b", {}, "more than once"),
    ],
)
def test_create_store_rejects_bad_options(url: str, options: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_store(url, **options)


def test_registry_names_every_builtin_scheme() -> None:
    assert set(BUILTIN_STORES) == {"sqlite", "memory", "redis", "rediss"}
