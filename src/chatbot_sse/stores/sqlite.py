"""SQLiteStore: the embedded default, one file shared by every gunicorn worker.

Threading. sqlite3 blocks, so each store owns one write connection and one
dedicated thread (a `ThreadPoolExecutor(max_workers=1)`) for whatever may
wait: the cross-process writer lock, `BEGIN IMMEDIATE` when another process
holds SQLite's lock, and `COMMIT` with its fsync. The statements of a write
themselves run on the event loop, inside the transaction the group commit
(`_sqlite_batch`) opened for them: they never wait for a lock there, and on
the thread each statement had to win the GIL back from the busy loop. Reads go
to a connection and a thread of their own (`_sqlite_reader`). The threads and
the connections are created in `open()`, never at import or construction,
because gunicorn forks after importing the app. A write whose awaiting task is
cancelled is committed all the same: it is either committed or not, never
half done.

Durability and sharing between processes:
- WAL journal: readers never block the writer, so workers serve history while
  another appends.
- `synchronous=FULL`: the WAL is fsynced at every commit; an acknowledged
  message survives a power cut.
- `busy_timeout`: a writer waits for another process's transaction to finish
  instead of failing at once.
- `BEGIN IMMEDIATE` for every write: the write lock is taken up front, so a
  transaction never has to upgrade a read lock, which in WAL mode fails with
  SQLITE_BUSY without waiting.
- `seq INTEGER PRIMARY KEY AUTOINCREMENT`: a total order of messages that is
  never reused, the order `history()` returns.

The reply log (`_sqlite_replies`) lives in the same file, so every worker sees
every reply. Readers waiting for another process's events (`read_events` with
a `wait`) are polled for together every `POLL_INTERVAL`, one statement for all
of them, and each reads only once its reply has moved (`_sqlite_follow`); an
append through the same store object polls at once.

Driver errors (locked, read-only, disk full, corrupt, closed) surface as
`StoreUnavailable`; integrity errors become `ConversationNotFound` or
`ValueError` (duplicate id), so callers never see a `sqlite3` exception.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from chatbot_sse.domain import Conversation, Message
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores import _sqlite_guards as guards
from chatbot_sse.stores import _sqlite_replies as replies
from chatbot_sse.stores import _sqlite_turns as turns
from chatbot_sse.stores._retention import PRUNE_EVERY, check_retention
from chatbot_sse.stores._sqlite_batch import GroupCommit
from chatbot_sse.stores._sqlite_follow import LogWatch, Progress
from chatbot_sse.stores._sqlite_reader import ReadConnection
from chatbot_sse.stores._sqlite_sql import (
    COUNT_MESSAGES,
    SCHEMA_VERSION,
    SELECT_ALL,
    SELECT_NEWEST,
    SELECT_RANGE,
    delete_conversation,
    message_from_row,
    prepare,
)
from chatbot_sse.stores._sqlite_writer_lock import WriterLock
from chatbot_sse.stores.base import (
    HistoryPage,
    IdempotencyRecord,
    LogAppend,
    ReplyControl,
    ReplyEvents,
    check_page,
    page_bounds,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "from_url"]

T = TypeVar("T")

POLL_INTERVAL = 0.025
"""Seconds between reads of the log while `read_events` waits for another process."""


class SQLiteStore:
    """A `Store` in one SQLite file; `busy_timeout_ms` is how long a writer waits for the lock.

    `event_retention`: seconds a finished reply's events stay readable.
    """

    backend = "sqlite"
    reconnects = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = 5000,
        event_retention: float = 300.0,
    ) -> None:
        check_retention(event_retention)
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.event_retention = event_retention
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread
        self._closed = False
        self._appends = 0
        self._guard_calls = 0
        self._watch = LogWatch(self._progress, POLL_INTERVAL)  # readers waiting for appends
        self._writer_lock = WriterLock(self.path)
        self._writes = GroupCommit(self._connection, self._writer_lock, busy_timeout_ms)
        self._reader = ReadConnection(self.path, busy_timeout_ms)
        self._write_failing = False  # the last write failed: `ping` probes with a write

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:  # open() failed, but writes were queued behind it
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        return self._conn

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool, long: bool = False
    ) -> T:
        """Run `fn(connection)` in the next group commit; driver errors become StoreUnavailable.
        `long`: off the event loop (see `GroupCommit`)."""
        if self._executor is None:
            state = "closed" if self._closed else "not open"
            raise StoreUnavailable(f"SQLite store {self.path} is {state}")
        try:
            result = await self._writes.submit(self._executor, fn, durable, long)
        except (sqlite3.Error, OSError) as exc:
            if not isinstance(exc, sqlite3.IntegrityError):
                self._write_failing = True
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        self._write_failing = False
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the read connection; driver errors become StoreUnavailable."""
        if self._executor is None:
            state = "closed" if self._closed else "not open"
            raise StoreUnavailable(f"SQLite store {self.path} is {state}")
        try:
            return await self._reader.run(fn)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    async def open(self) -> None:
        """Create the file, its directory and the schema if missing; set the pragmas."""
        if self._closed:
            raise StoreUnavailable(f"SQLite store {self.path} is closed")
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._executor = executor
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._connect)
            await self._reader.open()
        except BaseException as exc:
            self._executor = None
            executor.submit(self._disconnect)
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
            raise

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit (isolation_level=None): every transaction is an explicit BEGIN IMMEDIATE
        # check_same_thread=False: group commit runs the statements of a batch on the event loop
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        self._conn = conn
        prepare(conn, self.path, self.busy_timeout_ms)

    def _disconnect(self) -> None:
        self._writer_lock.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Close after the calls already queued have run; idempotent."""
        executor, self._executor = self._executor, None
        self._closed = True
        self._watch.wake_all()  # waiting readers find the store closed
        if executor is None:
            return
        if self._writes.outstanding:  # writes accepted before close are committed first
            await asyncio.wait(set(self._writes.outstanding))
        await self._reader.close()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"closing SQLite store {self.path}: {exc}") from exc
        finally:
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        """A read; while writes fail (read-only, disk full, I/O errors), also a write.

        A file that still reads but no longer takes writes must say so (`/health`
        degraded), and the first write that succeeds again says it recovered.
        """
        await self._read(
            lambda conn: conn.execute("SELECT 1 FROM conversations LIMIT 1").fetchall()
        )
        if self._write_failing:
            probe = f"PRAGMA user_version = {SCHEMA_VERSION}"
            await self._write(lambda conn: conn.execute(probe), durable=False)

    async def pragmas(self) -> dict[str, Any]:
        """The connection's settings as SQLite reports them, for tests and diagnostics."""

        def query(conn: sqlite3.Connection) -> dict[str, Any]:
            names = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "user_version")
            return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

        # In the write queue: the connection is the group commit's, batches run on the loop
        return await self._write(query, durable=True)

    async def create_conversation(
        self, conversation_id: str, created_at: float, owner: str = ""
    ) -> Conversation:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO conversations (id, created_at, owner) VALUES (?, ?, ?)",
                    (conversation_id, created_at, owner),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"conversation {conversation_id!r} already exists") from exc

        await self._write(insert, durable=True)
        return Conversation(conversation_id, created_at, owner)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        def select(conn: sqlite3.Connection) -> Conversation | None:
            row = conn.execute(
                "SELECT id, created_at, owner FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            return None if row is None else Conversation(row[0], row[1], row[2])

        return await self._read(select)

    async def append_message(self, message: Message) -> None:
        await self._write(lambda conn: turns.insert_message(conn, message), durable=True)

    async def begin_turn(
        self,
        message: Message,
        reply_id: str,
        *,
        create: bool,
        owner: str | None,
        history_limit: int,
    ) -> list[Message]:
        self._appends += 1
        sweep = self._appends % PRUNE_EVERY == 0
        retention = self.event_retention
        context = await self._write(
            lambda conn: turns.begin(
                conn,
                message,
                reply_id,
                create,
                owner,
                history_limit,
                time.time(),
                retention,
                sweep,
            ),
            durable=True,
        )
        self._wake()
        return context

    async def finish_turn(self, reply: Message, events: Sequence[tuple[int, bytes]]) -> None:
        retention = self.event_retention
        await self._write(
            lambda conn: turns.finish(conn, reply, events, time.time(), retention), durable=True
        )
        self._wake()

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")

        def select(conn: sqlite3.Connection) -> list[Message]:
            if limit is None:
                rows = conn.execute(SELECT_ALL, (conversation_id,))
            else:
                rows = conn.execute(SELECT_NEWEST, (conversation_id, limit))
            return [message_from_row(row) for row in rows]

        return await self._read(select)

    async def history_page(
        self, conversation_id: str, limit: int, before: int | None = None
    ) -> HistoryPage:
        check_page(limit, before)  # here, not on the read thread

        def select(conn: sqlite3.Connection) -> HistoryPage:
            (total,) = conn.execute(COUNT_MESSAGES, (conversation_id,)).fetchone()
            start, end = page_bounds(total, limit, before)
            rows = conn.execute(SELECT_RANGE, (conversation_id, end - start, start))
            return HistoryPage([message_from_row(row) for row in rows], start)

        return await self._read(select)

    async def delete_conversation(self, conversation_id: str) -> bool:
        deleted = await self._write(
            lambda conn: delete_conversation(conn, conversation_id), durable=True, long=True
        )
        self._wake()  # followers of its replies find them gone
        return deleted

    # --- the reply log ---------------------------------------------------------------------

    def _wake(self) -> None:
        """This store appended: followers waiting here need not wait for the next poll."""
        self._watch.nudge()

    async def _progress(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Progress]:
        retention = self.event_retention
        return await self._read(lambda conn: replies.progress(conn, keys, time.time(), retention))

    async def append_events(
        self,
        conversation_id: str,
        reply_id: str,
        events: Sequence[tuple[int, bytes]],
        finished: bool = False,
    ) -> None:
        self._appends += 1
        sweep = self._appends % PRUNE_EVERY == 0
        keys, retention = (conversation_id, reply_id), self.event_retention
        await self._write(
            lambda conn: replies.append(
                conn, keys, events, finished, time.time(), retention, sweep=sweep
            ),
            durable=False,
        )
        self._wake()

    async def read_events(
        self, conversation_id: str, reply_id: str, after_seq: int = -1, wait: float = 0.0
    ) -> ReplyEvents:
        keys, retention = (conversation_id, reply_id), self.event_retention
        deadline = time.monotonic() + wait
        while True:
            result = await self._read(
                lambda conn: replies.read(conn, keys, after_seq, time.time(), retention)
            )
            remaining = deadline - time.monotonic()
            if result.events or result.finished or not result.exists or remaining <= 0:
                return result
            await self._watch.wait(keys, after_seq, remaining)

    async def latest_reply(self, conversation_id: str) -> str | None:
        retention = self.event_retention
        return await self._read(
            lambda conn: replies.latest(conn, conversation_id, time.time(), retention)
        )

    async def request_cancel(self, conversation_id: str, reply_id: str) -> None:
        await self._write(
            lambda conn: replies.set_cancel(conn, (conversation_id, reply_id)), durable=False
        )

    async def mark_reader(self, conversation_id: str, reply_id: str) -> None:
        keys = (conversation_id, reply_id)
        await self._write(lambda conn: replies.set_reader(conn, keys, time.time()), durable=False)

    async def mark_writer(self, conversation_id: str, reply_id: str) -> None:
        keys = (conversation_id, reply_id)
        await self._write(lambda conn: replies.set_writer(conn, keys, time.time()), durable=False)

    async def reply_control(self, conversation_id: str, reply_id: str) -> ReplyControl:
        keys, retention = (conversation_id, reply_id), self.event_retention
        return await self._read(lambda conn: replies.control(conn, keys, time.time(), retention))

    async def append_many(self, appends: Sequence[LogAppend]) -> None:
        if not appends:
            return
        self._appends += 1
        sweep = self._appends % PRUNE_EVERY == 0
        retention = self.event_retention

        def append_all(conn: sqlite3.Connection) -> None:
            replies.append_many(conn, appends, time.time(), retention, sweep=sweep)

        await self._write(append_all, durable=False)
        self._wake()

    async def mark_writers(self, keys: Sequence[tuple[str, str]]) -> None:
        if keys:
            await self._write(
                lambda conn: replies.set_writers(conn, keys, time.time()), durable=False
            )

    async def reply_controls(self, keys: Sequence[tuple[str, str]]) -> list[ReplyControl]:
        retention = self.event_retention

        def read_all(conn: sqlite3.Connection) -> list[ReplyControl]:
            return replies.controls(conn, keys, time.time(), retention)

        return await self._read(read_all) if keys else []

    # --- guards ------------------------------------------------------------------------------
    # Counters, not conversation data: they ride in the group commit without forcing an fsync;
    # each operation is atomic in its batch's `BEGIN IMMEDIATE` transaction.

    async def _guard(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run a guard write with the current time; sweep expired rows now and then."""
        self._guard_calls += 1
        if self._guard_calls % PRUNE_EVERY == 0:
            await self._write(lambda conn: guards.prune(conn, time.time()), durable=False)
        return await self._write(lambda conn: fn(conn, time.time()), durable=False)

    async def hit(self, key: str, window_seconds: float, limit: int) -> tuple[bool, float]:
        return await self._guard(
            lambda conn, now: guards.hit(conn, key, window_seconds, limit, now)
        )

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_seconds: float) -> bool:
        return await self._guard(
            lambda conn, now: guards.acquire(conn, key, holder, limit, lease_seconds, now)
        )

    async def release_slot(self, key: str, holder: str) -> None:
        await self._write(lambda conn: guards.release(conn, key, holder), durable=False)

    async def remember_idempotency(
        self, key: str, fingerprint: str, ref: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        return await self._guard(
            lambda conn, now: guards.remember(conn, key, fingerprint, ref, ttl_seconds, now)
        )

    async def forget_idempotency(self, key: str) -> None:
        await self._write(lambda conn: guards.forget(conn, key), durable=False)


def from_url(
    url: str, *, event_retention: float = 300.0, conversation_ttl: float = 0.0
) -> SQLiteStore:
    """`sqlite:///relative/path.db` (from the working directory) or `sqlite:////abs/path.db`.

    `conversation_ttl` is a Redis feature: > 0 is refused rather than ignored.
    """
    parts = urlsplit(url)
    path = unquote(parts.path[1:])
    if parts.scheme != "sqlite" or parts.netloc or parts.query or parts.fragment or not path:
        raise ValueError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
        )
    check_retention(event_retention, conversation_ttl)
    if conversation_ttl:
        raise ValueError("conversation_ttl is only supported by the redis store")
    return SQLiteStore(path, event_retention=event_retention)
