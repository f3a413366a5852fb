"""The SQLite store's file: pragmas, schema, the SQL of messages, the write transaction.

Kept apart from `sqlite.py` (threading, errors, the public class) so the
tables and how a connection is set up can be read in one place. Every statement in `SCHEMA` is idempotent
(`IF NOT EXISTS`): migrating from an older `user_version` runs them all, which
adds what is missing and leaves existing tables as they are.

Version 2 added the reply log: `replies` (one row per reply in flight or
recently finished, with its control state) and `reply_events` (its frames by
seq). Neither references `conversations`: the log is a cache of frames that
is pruned on its own clock, not conversation data.

Version 3 added `conversations.owner` (the hash of the API key that created
it; `ALTER TABLE` for older files, since `ADD COLUMN` has no `IF NOT EXISTS`)
and the guards' tables (`_sqlite_guards`): `rate_windows`, `stream_slots`,
`idempotency_keys`.

Version 4 added indexes on expiry times (`replies_finished`, `replies_unfinished`,
`idempotency_by_expiry`): pruning used to scan every row kept, and at a steady
2,000 replies/s with the default 300 s retention `replies` holds 600,000 of
them, scanned every 64 appends (36 ms per scan at 300,000). With the indexes a
sweep reads only what has expired.

Version 5 added `reply_events.span`: a row holds `span` consecutive events, their frames
joined (`_sqlite_replies.append`). A fast reply's 22 events used to be 22 inserts at its
end; now they are one.

Version 6 added `reply_events.codec`: 0, the frames as they are; 1, LZ4-compressed
(`_sqlite_replies.pack`). A fast reply's row was 4.4 KB, too big for a page of a
WITHOUT ROWID table: every reply wrote an overflow page of its own to the WAL (and again
at the checkpoint), 85 % of the file. Its frames repeat the conversation's and the
reply's ids in every event: compressed, the row is ~580 bytes and six share a page.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from chatbot_sse.domain import Message, MessageStatus, Role
from chatbot_sse.errors import StoreUnavailable

__all__ = [
    "COUNT_MESSAGES",
    "INSERT_MESSAGE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SELECT_ALL",
    "SELECT_NEWEST",
    "SELECT_RANGE",
    "delete_conversation",
    "message_from_row",
    "message_params",
    "prepare",
    "write",
]

SCHEMA_VERSION = 6  # kept in `PRAGMA user_version`; bump it with a migration step
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        owner TEXT NOT NULL DEFAULT ''
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
    # `id` orders replies by their first append: the newest is the conversation's latest.
    # Times are time.time(): every process on the machine shares that clock.
    """CREATE TABLE IF NOT EXISTS replies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        reply_id TEXT NOT NULL,
        updated_at REAL NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT -1,
        finished_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        reader_seen_at REAL,
        UNIQUE (conversation_id, reply_id)
    )""",
    "CREATE INDEX IF NOT EXISTS replies_by_conversation ON replies (conversation_id, id)",
    # Partial: a reply is in exactly one, finished ones by when they finished, the others
    # (in flight or abandoned) by their last append or heartbeat.
    "CREATE INDEX IF NOT EXISTS replies_finished ON replies (finished_at)"
    " WHERE finished_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS replies_unfinished ON replies (updated_at)"
    " WHERE finished_at IS NULL",
    """CREATE TABLE IF NOT EXISTS reply_events (
        reply INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        frame BLOB NOT NULL,
        span INTEGER NOT NULL DEFAULT 1,
        codec INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (reply, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS rate_windows (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        ends_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS stream_slots (
        key TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (key, holder)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        ref TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency_keys (expires_at)",
)

COLUMNS = "id, conversation_id, role, content, created_at, status, meta"
INSERT_MESSAGE = f"INSERT INTO messages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant
SELECT_ALL = f"SELECT {COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq"  # noqa: S608 - constant
SELECT_NEWEST = (
    f"SELECT {COLUMNS} FROM (SELECT seq, {COLUMNS} FROM messages"  # noqa: S608 - constant
    " WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq"
)

SELECT_RANGE = (
    f"SELECT {COLUMNS} FROM messages WHERE conversation_id = ?"  # noqa: S608 - constant
    " ORDER BY seq LIMIT ? OFFSET ?"
)
COUNT_MESSAGES = "SELECT COUNT(*) FROM messages WHERE conversation_id = ?"

Row = tuple[str, str, str, str, float, str, str]


def delete_conversation(conn: sqlite3.Connection, conversation_id: str) -> bool:
    """Every row of the conversation, its reply log's included; False if it did not exist.
    Messages first: they reference the conversation."""
    conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
    conn.execute(
        "DELETE FROM reply_events WHERE reply IN (SELECT id FROM replies WHERE conversation_id = ?)",
        (conversation_id,),
    )
    conn.execute("DELETE FROM replies WHERE conversation_id = ?", (conversation_id,))
    deleted = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
    return deleted.rowcount > 0


@contextlib.contextmanager
def write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: the lock taken up front, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # also after a failed COMMIT (disk full), or the next BEGIN fails
            conn.execute("ROLLBACK")
        raise


def prepare(conn: sqlite3.Connection, path: Path, busy_timeout_ms: int) -> None:
    """Set the pragmas (see `sqlite.py`) and create or migrate the schema."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = _enable_wal(conn, busy_timeout_ms)
    if mode != "wal":
        raise StoreUnavailable(f"SQLite store {path}: cannot use WAL (journal {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    with write(conn):  # several workers may open a fresh file at once: one creates it
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"SQLite store {path} has schema version {version}, newer than this "
                f"server's {SCHEMA_VERSION}; upgrade the server"
            )
        if version < SCHEMA_VERSION:
            for statement in SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(conversations)")}
            if "owner" not in columns:  # a version 1 or 2 file
                conn.execute("ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(reply_events)")}
            if "span" not in columns:  # a version 2 to 4 file: every row holds one event
                conn.execute("ALTER TABLE reply_events ADD COLUMN span INTEGER NOT NULL DEFAULT 1")
            if "codec" not in columns:  # a version 2 to 5 file: every row is plain frames
                conn.execute("ALTER TABLE reply_events ADD COLUMN codec INTEGER NOT NULL DEFAULT 0")
        # written even when unchanged: a read-only file fails here, at start-up, not at the
        # first chat (SQLite opens such a file read-only without complaint)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> str:
    """Switch to WAL, retrying while busy: SQLite doesn't call the busy handler here.

    Only a fresh file needs the switch (the mode is stored in it), but then
    every worker opening it at the same moment races for it.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
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


def message_params(message: Message) -> tuple[str, str, str, str, float, str, str]:
    """The `INSERT_MESSAGE` parameters of a message."""
    return (
        message.id,
        message.conversation_id,
        message.role.value,
        message.content,
        message.created_at,
        message.status.value,
        orjson.dumps(message.meta).decode() if message.meta else "{}",
    )


def message_from_row(row: Row) -> Message:
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
