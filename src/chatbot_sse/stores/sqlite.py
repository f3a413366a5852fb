"""SQLiteStore: the embedded default, one file shared by every gunicorn worker.

Threading. sqlite3 blocks, so each store owns one connection on one dedicated
thread (a `ThreadPoolExecutor(max_workers=1)`) and every call runs there; the
event loop only awaits. aiosqlite does the same, but a private executor needs
no dependency and keeps the write queue in our hands: group commit (several
appends in one transaction, one fsync) slots in at `_run`/`_write` later. The
thread and the connection are created in `open()`, never at import or
construction, because gunicorn forks after importing the app. A call whose
awaiting task is cancelled still runs to the end on the thread: a write is
either committed or not, never half done.

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

Driver errors (locked, read-only, disk full, corrupt, closed) surface as
`StoreUnavailable`; integrity errors become `ConversationNotFound` or
`ValueError` (duplicate id), so callers never see a `sqlite3` exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson

from chatbot_sse.domain import Conversation, Message, MessageStatus, Role
from chatbot_sse.errors import ConversationNotFound, StoreUnavailable

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "from_url"]

T = TypeVar("T")

SCHEMA_VERSION = 1  # kept in `PRAGMA user_version`; bump it with a migration step
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, seq)",
)
COLUMNS = "id, conversation_id, role, content, created_at, status, meta"
INSERT_MESSAGE = f"INSERT INTO messages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant
SELECT_ALL = f"SELECT {COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq"  # noqa: S608 - constant
SELECT_NEWEST = (
    f"SELECT {COLUMNS} FROM (SELECT seq, {COLUMNS} FROM messages"  # noqa: S608 - constant
    " WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq"
)

Row = tuple[str, str, str, str, float, str, str]


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: the lock taken up front, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # also after a failed COMMIT (disk full), or the next BEGIN fails
            conn.execute("ROLLBACK")
        raise


def _message(row: Row) -> Message:
    id_, conversation_id, role, content, created_at, status, meta = row
    return Message(
        id_,
        conversation_id,
        Role(role),
        content,
        created_at,
        MessageStatus(status),
        orjson.loads(meta) if meta != "{}" else {},
    )


class SQLiteStore:
    """A `Store` in one SQLite file; `busy_timeout_ms` is how long a writer waits for the lock."""

    backend = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread
        self._closed = False

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the store's thread; driver errors become StoreUnavailable."""
        if self._executor is None:
            state = "closed" if self._closed else "not open"
            raise StoreUnavailable(f"SQLite store {self.path} is {state}")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:  # open() failed, but calls were queued behind it
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        return fn(self._conn)

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
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        self._conn = conn
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        mode = self._enable_wal(conn)
        if mode != "wal":
            raise StoreUnavailable(f"SQLite store {self.path}: cannot use WAL (journal {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        with _write(conn):  # several workers may open a fresh file at once: one creates it
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"SQLite store {self.path} has schema version {version}, newer than this "
                    f"server's {SCHEMA_VERSION}; upgrade the server"
                )
            if version < SCHEMA_VERSION:
                for statement in SCHEMA:
                    conn.execute(statement)
            # written even when unchanged: a read-only file fails here, at start-up, not at the
            # first chat (SQLite opens such a file read-only without complaint)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL, retrying while busy: SQLite doesn't call the busy handler here.

        Only a fresh file needs the switch (the mode is stored in it), but then
        every worker opening it at the same moment races for it.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.001
        while True:
            try:
                mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                return mode
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Close after the calls already queued have run; idempotent."""
        executor, self._executor = self._executor, None
        self._closed = True
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"closing SQLite store {self.path}: {exc}") from exc
        finally:
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1 FROM conversations LIMIT 1").fetchall())

    async def pragmas(self) -> dict[str, Any]:
        """The connection's settings as SQLite reports them, for tests and diagnostics."""

        def query(conn: sqlite3.Connection) -> dict[str, Any]:
            names = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "user_version")
            return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

        return await self._run(query)

    async def create_conversation(self, conversation_id: str, created_at: float) -> Conversation:
        def insert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                try:
                    conn.execute(
                        "INSERT INTO conversations (id, created_at) VALUES (?, ?)",
                        (conversation_id, created_at),
                    )
                except sqlite3.IntegrityError as exc:
                    raise ValueError(f"conversation {conversation_id!r} already exists") from exc

        await self._run(insert)
        return Conversation(conversation_id, created_at)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        def select(conn: sqlite3.Connection) -> Conversation | None:
            row = conn.execute(
                "SELECT id, created_at FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            return None if row is None else Conversation(row[0], row[1])

        return await self._run(select)

    async def append_message(self, message: Message) -> None:
        params = (
            message.id,
            message.conversation_id,
            message.role.value,
            message.content,
            message.created_at,
            message.status.value,
            orjson.dumps(message.meta).decode() if message.meta else "{}",
        )

        def insert(conn: sqlite3.Connection) -> None:
            with _write(conn):
                try:
                    conn.execute(INSERT_MESSAGE, params)
                except sqlite3.IntegrityError as exc:
                    if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
                        raise ConversationNotFound(
                            f"conversation {message.conversation_id!r} not found"
                        ) from exc
                    raise ValueError(f"message {message.id!r} already exists") from exc

        await self._run(insert)

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")

        def select(conn: sqlite3.Connection) -> list[Message]:
            if limit is None:
                rows = conn.execute(SELECT_ALL, (conversation_id,))
            else:
                rows = conn.execute(SELECT_NEWEST, (conversation_id, limit))
            return [_message(row) for row in rows]

        return await self._run(select)


def from_url(url: str) -> SQLiteStore:
    """`sqlite:///relative/path.db` (from the working directory) or `sqlite:////abs/path.db`."""
    parts = urlsplit(url)
    path = unquote(parts.path[1:])
    if parts.scheme != "sqlite" or parts.netloc or parts.query or parts.fragment or not path:
        raise ValueError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
        )
    return SQLiteStore(path)
