"""Group commit: concurrent writes share transactions, and one bad write fails alone."""

from __future__ import annotations

import asyncio
import selectors
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chatbot_sse.domain import Message, Role, new_conversation_id, new_message_id
from chatbot_sse.errors import ConversationNotFound
from chatbot_sse.stores import _sqlite_batch
from chatbot_sse.stores.sqlite import SQLiteStore


def message(conversation_id: str, content: str, message_id: str | None = None) -> Message:
    return Message(message_id or new_message_id(), conversation_id, Role.USER, content, time.time())


async def test_concurrent_writes_share_commits(store: SQLiteStore) -> None:
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await store._write(trace, durable=False)  # observe the store's own connection
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, time.time())
    sent = [message(conversation_id, f"m{i}") for i in range(200)]
    await asyncio.gather(*(store.append_message(m) for m in sent))
    commits = sum(1 for s in statements if s == "COMMIT")
    assert commits < 50  # 200 durable writes, far fewer fsyncs
    assert "SAVEPOINT op" not in statements  # none failed: no savepoint per write either
    assert await store.history(conversation_id) == sent  # every write, in submission order


async def test_a_failing_write_does_not_fail_its_batch(store: SQLiteStore) -> None:
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, time.time())
    first = message(conversation_id, "first")
    await store.append_message(first)
    good = [message(conversation_id, f"good {i}") for i in range(5)]
    duplicate = message(conversation_id, "again", message_id=first.id)
    orphan = message(new_conversation_id(), "nobody's")
    results = await asyncio.gather(
        store.append_message(good[0]),
        store.append_message(duplicate),
        store.append_message(good[1]),
        store.append_message(orphan),
        *(store.append_message(m) for m in good[2:]),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], ConversationNotFound)
    assert [r for i, r in enumerate(results) if i not in (1, 3)] == [None] * 5
    assert await store.history(conversation_id) == [first, *good]
    statements: list[str] = []
    await store._write(lambda conn: conn.set_trace_callback(statements.append), durable=False)
    await asyncio.gather(
        *(store.append_message(message(conversation_id, f"more {i}")) for i in range(3)),
        store.append_message(orphan),
        return_exceptions=True,
    )
    # the failure undid its batch, which ran again with a savepoint per write
    assert "ROLLBACK" in statements
    assert "SAVEPOINT op" in statements
    assert len(await store.history(conversation_id)) == 1 + 5 + 3


async def test_log_only_batches_skip_the_fsync_but_messages_do_not(store: SQLiteStore) -> None:
    statements: list[str] = []
    await store._write(lambda conn: conn.set_trace_callback(statements.append), durable=True)
    statements.clear()  # that write's own COMMIT
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    await store.append_events(conversation_id, reply_id, [(0, b"x")])
    # NORMAL for this commit only: the connection rests at FULL
    normal = statements.index("PRAGMA synchronous = NORMAL")
    assert statements.index("BEGIN IMMEDIATE") > normal
    assert statements.index("PRAGMA synchronous = FULL") > statements.index("COMMIT") > normal
    statements.clear()
    await store.create_conversation(conversation_id, time.time())
    assert "COMMIT" in statements
    assert "PRAGMA synchronous = NORMAL" not in statements
    assert (await store.pragmas())["synchronous"] == 2  # FULL


async def test_reads_do_not_wait_behind_a_blocked_write(store: SQLiteStore) -> None:
    """Another process holds the write lock: our write waits, our reads and ping do not."""
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, time.time())
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.ensure_future(store.append_message(message(conversation_id, "later")))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await store.ping()
        assert await store.history(conversation_id) == []
        assert time.monotonic() - started < 1.0  # the write waits up to the 5 s busy timeout
        assert not pending.done()
        other.execute("COMMIT")
        await pending
    finally:
        other.close()
    assert [m.content for m in await store.history(conversation_id)] == ["later"]


def _trace_threads(ran: list[tuple[str, str]]) -> Any:
    """A write that makes the store's connection note each statement and the thread it ran on."""

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(lambda sql: ran.append((sql, threading.current_thread().name)))

    return trace


async def test_statements_and_a_quick_commit_run_on_the_loop(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread would have to win the GIL back from the loop after every statement, and
    handing it a commit that takes a fraction of a millisecond cost more than the fsync.
    (The limit is raised: a loaded machine's first fsync of a new file may be slow.)"""
    monkeypatch.setattr(_sqlite_batch, "LOOP_COMMIT_LIMIT", 1.0)
    ran: list[tuple[str, str]] = []
    await store._write(_trace_threads(ran), durable=True)
    ran.clear()  # that write's own COMMIT
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, time.time())
    loop_thread = threading.current_thread().name
    where = {sql.split()[0]: thread for sql, thread in ran}
    assert where["BEGIN"] == loop_thread  # nobody held the locks: no wait, no hop
    assert where["INSERT"] == loop_thread
    assert where["COMMIT"] == loop_thread


async def test_slow_commits_go_to_the_store_thread_and_are_tried_on_the_loop_again(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk whose fsync takes milliseconds would stall every stream at every commit: once
    commits are slower than the limit on average, they run on the thread for a spell, then one
    is tried on the loop again. (No real disk here is that slow: the limit is lowered.)"""
    ran: list[tuple[str, str]] = []
    await store._write(_trace_threads(ran), durable=True)
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, time.time())
    monkeypatch.setattr(_sqlite_batch, "LOOP_COMMIT_LIMIT", 0.0)  # every commit is too slow
    monkeypatch.setattr(_sqlite_batch, "THREAD_SPELL_SECONDS", 1.0)

    async def commit_thread(content: str) -> str:
        ran.clear()
        await store.append_message(message(conversation_id, content))
        [thread] = [thread for sql, thread in ran if sql == "COMMIT"]
        return thread

    loop_thread = threading.current_thread().name
    assert await commit_thread("timed on the loop: too slow") == loop_thread
    assert (await commit_thread("during the spell")).startswith("sqlite-store")
    assert (await commit_thread("still")).startswith("sqlite-store")
    await asyncio.sleep(1.05)
    assert await commit_thread("the spell is over: tried again") == loop_thread
    assert (await commit_thread("too slow again")).startswith("sqlite-store")
    monkeypatch.setattr(_sqlite_batch, "LOOP_COMMIT_LIMIT", 1.0)  # every commit is quick now
    await asyncio.sleep(1.05)
    assert await commit_thread("quick") == loop_thread
    assert await commit_thread("and stays") == loop_thread
    assert [m.content for m in await store.history(conversation_id)] == [
        "timed on the loop: too slow",
        "during the spell",
        "still",
        "the spell is over: tried again",
        "too slow again",
        "quick",
        "and stays",
    ]


async def test_a_batch_begun_on_the_store_thread_after_waiting_still_commits(
    store: SQLiteStore,
) -> None:
    """Another process holds SQLite's lock: the loop's try fails without waiting, the thread
    waits for the lock, and the statements still run on the loop."""
    ran: list[tuple[str, str]] = []
    await store._write(
        lambda conn: conn.set_trace_callback(
            lambda sql: ran.append((sql, threading.current_thread().name))
        ),
        durable=True,
    )
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        conversation_id = new_conversation_id()
        ran.clear()
        pending = asyncio.ensure_future(store.create_conversation(conversation_id, time.time()))
        await asyncio.sleep(0.2)
        assert not pending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(pending, 5)
    finally:
        other.close()
    begins = [thread for sql, thread in ran if sql == "BEGIN IMMEDIATE"]
    assert begins[0] == threading.current_thread().name  # tried on the loop: busy at once
    assert begins[-1].startswith("sqlite-store")  # then waited for on the thread
    inserts = [thread for sql, thread in ran if sql.startswith("INSERT")]
    assert inserts == [threading.current_thread().name]
    assert await store.get_conversation(conversation_id) is not None


async def test_a_transaction_left_open_is_rolled_back_before_the_next_batch(
    store: SQLiteStore,
) -> None:
    """A failure whose rollback failed too must not wedge every later write."""
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, time.time())
    conn = store._conn
    assert conn is not None
    conn.execute("BEGIN IMMEDIATE")  # as if a batch's ROLLBACK had failed
    conn.execute(
        "INSERT INTO conversations (id, created_at, owner) VALUES (?, ?, '')",
        (new_conversation_id(), time.time()),
    )
    await store.append_message(message(conversation_id, "after"))
    assert [m.content for m in await store.history(conversation_id)] == ["after"]
    assert not conn.in_transaction


async def test_a_conversation_is_deleted_on_the_store_thread_not_the_loop(
    store: SQLiteStore,
) -> None:
    """A long conversation's delete stalled every stream of the process while it ran (~210 ms
    for 100,000 messages); on the thread, sqlite3 lets the GIL go and the loop keeps serving."""
    ran: list[tuple[str, str]] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(lambda sql: ran.append((sql, threading.current_thread().name)))

    doomed, kept = new_conversation_id(), new_conversation_id()
    for conversation_id in (doomed, kept):
        await store.create_conversation(conversation_id, time.time())
    await store.append_message(message(doomed, "soon gone"))
    await store._write(trace, durable=True)
    ran.clear()
    orphan = message(new_conversation_id(), "nobody's")
    deleted, appended, failed = await asyncio.gather(
        store.delete_conversation(doomed),
        store.append_message(message(kept, "stays")),
        store.append_message(orphan),  # fails alone, in the delete's batch
        return_exceptions=True,
    )
    assert (deleted, appended) == (True, None)
    assert isinstance(failed, ConversationNotFound)
    loop_thread = threading.current_thread().name
    deletes = {thread for sql, thread in ran if sql.startswith("DELETE")}
    assert deletes
    assert all(thread.startswith("sqlite-store") for thread in deletes)
    savepoints = {thread for sql, thread in ran if sql == "SAVEPOINT op"}
    assert savepoints == deletes  # the failure was undone alone, in that batch, on the thread
    assert await store.get_conversation(doomed) is None
    assert [m.content for m in await store.history(kept)] == ["stays"]
    ran.clear()
    await store.append_message(message(kept, "later"))  # the next batch: on the loop again
    assert {thread for sql, thread in ran if sql.startswith("INSERT")} == {loop_thread}


class _RecordingSelector(selectors.DefaultSelector):
    """asyncio's selector, noting every timeout the loop waits with."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        self.timeouts.append(timeout)
        return super().select(timeout)


def test_gathering_a_batch_never_puts_asyncio_s_loop_to_sleep(tmp_path: Path) -> None:
    """A batch waits a turn of the loop at a time for writes on their way. On asyncio's own
    loop a timer of 0.1 ms slept for a whole millisecond whenever no I/O was ready: the
    selector rounds any positive timeout up to 1 ms. Under wrk every connection waits for the
    same commit, so that millisecond was the loop idle, per batch."""
    selector = _RecordingSelector()
    loop = asyncio.SelectorEventLoop(selector)

    async def writes() -> None:
        store = SQLiteStore(tmp_path / "chat.db")
        await store.open()
        try:
            conversation_id = new_conversation_id()
            await store.create_conversation(conversation_id, time.time())
            selector.timeouts.clear()
            await asyncio.gather(
                *(store.append_message(message(conversation_id, "x")) for _ in range(3))
            )
            await store.append_message(message(conversation_id, "alone"))
            waits = list(selector.timeouts)
            assert len(await store.history(conversation_id)) == 4
        finally:
            await store.close()
        # None: waiting for I/O (the store's thread committing); 0: a turn that polls I/O
        assert [t for t in waits if t is not None and t > 0] == []
        assert 0 in waits  # the turns that gathered the batches polled I/O on their way

    try:
        loop.run_until_complete(writes())
    finally:
        loop.close()
