"""The SQLite store's guards: rate windows, stream slots, idempotency keys.

Plain functions run on the store's thread inside its group commit
(`_sqlite_batch`): each is one operation of a `BEGIN IMMEDIATE` transaction, so
every worker sharing the file counts in one order. Like the reply log, these
are counters rather than conversation data: written alone they commit without
fsync (`synchronous = NORMAL`; still atomic in WAL mode). Expired rows are
deleted by `prune`, run every `PRUNE_EVERY` calls.
"""

from __future__ import annotations

import sqlite3

from chatbot_sse.stores.base import IdempotencyRecord

__all__ = ["acquire", "forget", "hit", "prune", "release", "remember"]


def prune(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM rate_windows WHERE ends_at <= ?", (now,))
    conn.execute("DELETE FROM stream_slots WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))


def hit(
    conn: sqlite3.Connection, key: str, window: float, limit: int, now: float
) -> tuple[bool, float]:
    row = conn.execute("SELECT count, ends_at FROM rate_windows WHERE key = ?", (key,)).fetchone()
    count, ends = (0, now + window) if row is None or row[1] <= now else row
    count += 1
    conn.execute(
        "INSERT OR REPLACE INTO rate_windows (key, count, ends_at) VALUES (?, ?, ?)",
        (key, count, ends),
    )
    return count <= limit, ends - now


def acquire(
    conn: sqlite3.Connection, key: str, holder: str, limit: int, lease: float, now: float
) -> bool:
    conn.execute("DELETE FROM stream_slots WHERE key = ? AND expires_at <= ?", (key, now))
    held = conn.execute(
        "SELECT holder = ? FROM stream_slots WHERE key = ?", (holder, key)
    ).fetchall()
    if not any(mine for (mine,) in held) and len(held) >= limit:
        return False
    conn.execute(
        "INSERT OR REPLACE INTO stream_slots (key, holder, expires_at) VALUES (?, ?, ?)",
        (key, holder, now + lease),
    )
    return True


def release(conn: sqlite3.Connection, key: str, holder: str) -> None:
    conn.execute("DELETE FROM stream_slots WHERE key = ? AND holder = ?", (key, holder))


def remember(
    conn: sqlite3.Connection, key: str, fingerprint: str, ref: str, ttl: float, now: float
) -> IdempotencyRecord | None:
    row = conn.execute(
        "SELECT fingerprint, ref FROM idempotency_keys WHERE key = ? AND expires_at > ?",
        (key, now),
    ).fetchone()
    if row is not None:
        return IdempotencyRecord(row[0], row[1])
    conn.execute(
        "INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, ref, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (key, fingerprint, ref, now + ttl),
    )
    return None


def forget(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM idempotency_keys WHERE key = ?", (key,))
