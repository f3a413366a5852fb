"""The SQLite store's reply log: plain functions run on the store's thread.

Every worker sharing the file sees the same `replies` and `reply_events`
tables, which is what lets a client resume on another worker. Expiry is
decided by the `KEPT` predicate at every read, so a reply is gone the moment
its retention ends; the rows themselves are deleted lazily by `prune`, which
`append` runs every `PRUNE_EVERY` calls.

A row of `reply_events` holds `span` consecutive events, their frames joined
(see `FRAME_END`): what one append brings, usually a fast reply's whole log at
its end, or a paced reply's last tenth of a second, is one row. A row of
`PACK_MIN` bytes or more is stored LZ4-compressed (`pack`, `codec` 1): a fast
reply's 22 frames, 4.4 KB that repeat its two ids in every event, become ~580
bytes, which fit in the table's page instead of an overflow page of their own
(see `_sqlite_sql`, version 6). LZ4 takes ~1.5 us each way for such a row.

The writers here run inside the store's group commit (`_sqlite_batch`): the log
is a replay cache, not conversation data, so a batch of log writes alone commits
with `synchronous = NORMAL` (no fsync; in WAL mode still atomic and never
corrupt). The next `synchronous = FULL` commit (a message) fsyncs the WAL, the
log's frames with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import lz4.block

from chatbot_sse.stores._retention import ABANDONED_AFTER
from chatbot_sse.stores.base import EventRun, LogAppend, ReplyControl, ReplyEvents

__all__ = [
    "append",
    "append_many",
    "control",
    "enter",
    "in_flight",
    "latest",
    "pack",
    "prune",
    "read",
    "set_cancel",
    "set_reader",
    "unpack",
]

FRAME_END = b"\n\n"
"""Ends every SSE event. Consecutive frames appended together are kept as one row (a fast
reply's 22 events are one insert, not 22); `read` splits them again at this mark, so only
frames holding it exactly once, at their end, are joined."""

PLAIN = 0  # codec: the frames as they are
LZ4 = 1  # codec: an LZ4 block with its size in front (`lz4.block`, `store_size`)
PACK_MIN = 512
"""Bytes from which a row is compressed: below it a row fits in its page anyway, and the
one or two frames of a paced reply's append have little to share."""
MAX_UNPACKED = 64 * 2**20  # bytes: far above any reply's log, far below what would hurt


def pack(frames: bytes) -> tuple[bytes, int]:
    """A row's frames as stored, and their codec: compressed if big enough and it helps."""
    if len(frames) < PACK_MIN:
        return frames, PLAIN
    packed = lz4.block.compress(frames, store_size=True)
    return (packed, LZ4) if len(packed) < len(frames) else (frames, PLAIN)


def unpack(stored: bytes, codec: int) -> bytes:
    """The frames of a row as `pack` stored them. A row that cannot be read is the file's
    fault, as SQLite's own corruption is: `sqlite3.DatabaseError` (the store's reader makes
    it `StoreUnavailable`, and a follower's stream ends with an `error` event)."""
    if codec == PLAIN:
        return stored
    if codec == LZ4:
        size = int.from_bytes(stored[:4], "little")  # `store_size`: what it unpacks to
        if len(stored) < 4 or size > MAX_UNPACKED:  # never allocate what a damaged row claims
            raise sqlite3.DatabaseError(f"reply log row is corrupt: it claims {size} bytes")
        try:
            frames: bytes = lz4.block.decompress(stored)
        except (lz4.block.LZ4BlockError, ValueError) as exc:
            raise sqlite3.DatabaseError(f"reply log row is corrupt: {exc}") from None
        return frames
    raise sqlite3.DatabaseError(f"reply log row with unknown codec {codec}")


# Parameters: (now - ABANDONED_AFTER, now - retention). No NULL can reach NOT: updated_at is set.
EXPIRED = "(CASE WHEN finished_at IS NULL THEN updated_at <= ? ELSE finished_at <= ? END)"
SELECT_REPLY = (
    f"SELECT id, last_seq, finished_at, NOT {EXPIRED} FROM replies"  # noqa: S608 - constant
    " WHERE conversation_id = ? AND reply_id = ?"
)


def _limits(now: float, retention: float) -> tuple[float, float]:
    return now - ABANDONED_AFTER, now - retention


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: the reply row and its events from the same commit."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


# `EXPIRED` as two range scans of the partial indexes (schema version 4), not a full scan.
SELECT_EXPIRED = (
    "SELECT id FROM replies WHERE finished_at IS NULL AND updated_at <= ?1"
    " UNION ALL SELECT id FROM replies WHERE finished_at <= ?2"
)


def prune(conn: sqlite3.Connection, now: float, retention: float) -> None:
    """Delete the replies (and their events) whose retention has run out."""
    limits = _limits(now, retention)
    conn.execute(f"DELETE FROM reply_events WHERE reply IN ({SELECT_EXPIRED})", limits)  # noqa: S608 - constant
    conn.execute(f"DELETE FROM replies WHERE id IN ({SELECT_EXPIRED})", limits)  # noqa: S608 - constant


def append(
    conn: sqlite3.Connection,
    keys: tuple[str, str],
    events: Sequence[tuple[int, bytes]],
    finished: bool,
    now: float,
    retention: float,
    *,
    sweep: bool = False,
) -> None:
    """Add the events with a seq above the last one kept (inside the caller's transaction)."""
    if sweep:
        prune(conn, now, retention)
    elif _continue(conn, keys, events, finished, now):
        return
    row = conn.execute(SELECT_REPLY, (*_limits(now, retention), *keys)).fetchone()
    if row is not None and not row[3]:  # expired but not pruned yet: start afresh
        conn.execute("DELETE FROM reply_events WHERE reply = ?", (row[0],))
        conn.execute("DELETE FROM replies WHERE id = ?", (row[0],))
        row = None
    if row is None:
        cursor = conn.execute(
            "INSERT INTO replies (conversation_id, reply_id, updated_at) VALUES (?, ?, ?)",
            (*keys, now),
        )
        reply, last_seq, finished_at = cursor.lastrowid, -1, None
    else:
        reply, last_seq, finished_at, _ = row
    if finished_at is not None:
        return
    fresh = []
    for seq, frame in events:
        if seq > last_seq:
            fresh.append((seq, frame))
            last_seq = seq
    rows = [(reply, seq, *pack(frames), span) for seq, frames, span in _rows(fresh)]
    conn.executemany(
        "INSERT INTO reply_events (reply, seq, frame, codec, span) VALUES (?, ?, ?, ?, ?)", rows
    )
    conn.execute(
        "UPDATE replies SET last_seq = ?, updated_at = ?, finished_at = ? WHERE id = ?",
        (last_seq, now, now if finished else None, reply),
    )


# A reply's next events continue it: it is unfinished, kept, and its last event is ?3 - 1.
# Parameters: conversation_id, reply_id, first seq, stored frames, span, now - ABANDONED_AFTER,
# their codec, now, and when it finished (None: it goes on); the insert takes the first seven.
_CONTINUES = (
    " WHERE conversation_id = ?1 AND reply_id = ?2 AND last_seq = ?3 - 1"
    " AND finished_at IS NULL AND updated_at > ?6"
)
INSERT_CONTINUATION = (
    "INSERT INTO reply_events (reply, seq, frame, span, codec)"  # noqa: S608 - constant
    f" SELECT id, ?3, ?4, ?5, ?7 FROM replies{_CONTINUES}"
)
UPDATE_CONTINUATION = (
    "UPDATE replies SET last_seq = ?3 + ?5 - 1, updated_at = ?8, finished_at = ?9"  # noqa: S608 - constant
    f"{_CONTINUES}"
)


def _continue(
    conn: sqlite3.Connection,
    keys: tuple[str, str],
    events: Sequence[tuple[int, bytes]],
    finished: bool,
    now: float,
) -> bool:
    """The usual append, in two statements instead of three: a reply continued with
    consecutive frames. False, having written nothing, for anything else."""
    params = _continuation(keys, events, finished, now)
    if params is None:
        return False
    if conn.execute(INSERT_CONTINUATION, params[:7]).rowcount != 1:
        return False
    conn.execute(UPDATE_CONTINUATION, params)
    return True


Continuation = tuple[str, str, int, bytes, int, float, int, float, float | None]
"""The parameters of `UPDATE_CONTINUATION`; `INSERT_CONTINUATION` takes the first seven."""


def _continuation(
    keys: tuple[str, str], events: Sequence[tuple[int, bytes]], finished: bool, now: float
) -> Continuation | None:
    """The parameters that continue a reply with `events`, if they make one row."""
    run = _as_one_row(events)
    if run is None:
        return None
    first, frames, span = run
    stored, codec = pack(frames)
    ended = now if finished else None
    return (*keys, first, stored, span, now - ABANDONED_AFTER, codec, now, ended)


def enter(
    conn: sqlite3.Connection, keys: tuple[str, str], now: float, retention: float, sweep: bool
) -> None:
    """A new reply's entry in the log, empty: one insert, or `append` if the reply is known."""
    if sweep:
        prune(conn, now, retention)
    try:
        conn.execute(
            "INSERT INTO replies (conversation_id, reply_id, updated_at) VALUES (?, ?, ?)",
            (*keys, now),
        )
    except sqlite3.IntegrityError:  # known already (maybe expired): the general way
        append(conn, keys, [], False, now, retention)


def append_many(
    conn: sqlite3.Connection,
    appends: Sequence[LogAppend],
    now: float,
    retention: float,
    *,
    sweep: bool = False,
) -> None:
    """`append` for many replies; the flusher's write of everything in flight (see `ReplyHub`).

    The usual append continues a reply in flight with consecutive frames: those are two
    `executemany` for all of them (one row each), not three statements per reply. If any
    reply is not such a continuation, everything is undone and appended one by one.
    A thousand paced replies are a round every `FLUSH_INTERVAL`: three statements each
    were most of a round's time.
    """
    if sweep:
        prune(conn, now, retention)
    rows: list[Continuation] = []
    for a in appends:
        row = _continuation((a.conversation_id, a.reply_id), a.events, a.finished, now)
        if row is None:
            rows = []
            break
        rows.append(row)
    if rows:
        conn.execute("SAVEPOINT continuation")
        inserted = conn.executemany(INSERT_CONTINUATION, [row[:7] for row in rows]).rowcount
        updated = conn.executemany(UPDATE_CONTINUATION, rows).rowcount
        if inserted == updated == len(rows):
            conn.execute("RELEASE continuation")
            return
        conn.execute("ROLLBACK TO continuation")
        conn.execute("RELEASE continuation")
    for a in appends:
        append(conn, (a.conversation_id, a.reply_id), a.events, a.finished, now, retention)


def _rows(events: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes, int]]:
    """`(first seq, frames, span)` rows for `events`, in order: consecutive frames of one event
    each are joined in one row; any other frame is a row of its own.

    An `EventRun` is one row as it is: its frames are one event each by its promise, and a
    search for the blank line in each of a fast reply's 22 frames was 7 of the 9 us that
    this function and `pack` took for them (`_one_event` scans a frame in C, but a
    two-byte needle takes CPython's slow path)."""
    if type(events) is EventRun:
        frames = events.frames
        return [(events.first, b"".join(frames), len(frames))] if frames else []
    rows: list[tuple[int, bytes, int]] = []
    run: list[bytes] = []  # the frames of the row being built, all joinable
    first = 0
    for seq, frame in events:
        joinable = _one_event(frame)
        if run and joinable and seq == first + len(run):
            run.append(frame)
            continue
        if run:
            rows.append((first, b"".join(run), len(run)))
            run = []
        if joinable:
            first, run = seq, [frame]
        else:
            rows.append((seq, frame, 1))
    if run:
        rows.append((first, b"".join(run), len(run)))
    return rows


def _as_one_row(events: Sequence[tuple[int, bytes]]) -> tuple[int, bytes, int] | None:
    """`events` as one row, if `_rows` makes them one."""
    rows = _rows(events)
    return rows[0] if len(rows) == 1 else None


def _one_event(frame: bytes) -> bool:
    """Whether `frame` holds `FRAME_END` once, at its end: joinable with others in a row."""
    return frame.find(FRAME_END) == len(frame) - 2 >= 0


def read(
    conn: sqlite3.Connection, keys: tuple[str, str], after_seq: int, now: float, retention: float
) -> ReplyEvents:
    with _snapshot(conn):
        row = conn.execute(SELECT_REPLY, (*_limits(now, retention), *keys)).fetchone()
        if row is None or not row[3]:
            return ReplyEvents([], finished=False, exists=False)
        rows = conn.execute(SELECT_ROWS_AFTER, (row[0], after_seq)).fetchall()
        return ReplyEvents(_frames(rows, after_seq), finished=row[2] is not None, exists=True)


# The rows holding the events after ?2: those starting after it, and the one it may be in.
SELECT_ROWS_AFTER = (
    "SELECT seq, frame, span, codec FROM reply_events WHERE reply = ?1 AND seq >= coalesce("
    "(SELECT max(seq) FROM reply_events WHERE reply = ?1 AND seq <= ?2), ?2 + 1) ORDER BY seq"
)


def _frames(rows: list[tuple[int, bytes, int, int]], after_seq: int) -> list[tuple[int, bytes]]:
    """The events after `after_seq`, one per frame, from rows holding `span` events each."""
    out: list[tuple[int, bytes]] = []
    for seq, stored, span, codec in rows:
        blob = unpack(stored, codec)
        if span == 1:
            if seq > after_seq:
                out.append((seq, blob))
            continue
        parts = blob.split(FRAME_END)
        for offset in range(max(0, after_seq + 1 - seq), span):
            out.append((seq + offset, parts[offset] + FRAME_END))
    return out


def latest(
    conn: sqlite3.Connection, conversation_id: str, now: float, retention: float
) -> str | None:
    """The reply appended to first most recently, if it is still kept."""
    row = conn.execute(
        f"SELECT reply_id, NOT {EXPIRED} FROM replies WHERE conversation_id = ?"  # noqa: S608 - constant
        " ORDER BY id DESC LIMIT 1",
        (*_limits(now, retention), conversation_id),
    ).fetchone()
    return row[0] if row is not None and row[1] else None


def in_flight(
    conn: sqlite3.Connection, conversation_id: str, now: float, retention: float
) -> str | None:
    """The conversation's latest reply if it is unfinished and still kept (not abandoned):
    being generated, or about to be found orphaned."""
    row = conn.execute(
        f"SELECT reply_id, finished_at IS NULL AND NOT {EXPIRED} FROM replies"  # noqa: S608 - constant
        " WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
        (*_limits(now, retention), conversation_id),
    ).fetchone()
    return row[0] if row is not None and row[1] else None


def set_cancel(conn: sqlite3.Connection, keys: tuple[str, str]) -> None:
    conn.execute(
        "UPDATE replies SET cancel_requested = 1 WHERE conversation_id = ? AND reply_id = ?",
        keys,
    )


def set_reader(conn: sqlite3.Connection, keys: tuple[str, str], now: float) -> None:
    conn.execute(
        "UPDATE replies SET reader_seen_at = ? WHERE conversation_id = ? AND reply_id = ?",
        (now, *keys),
    )


def set_writer(conn: sqlite3.Connection, keys: tuple[str, str], now: float) -> None:
    """The writer's heartbeat is `updated_at`, which appends also move (so is the expiry)."""
    conn.execute(
        "UPDATE replies SET updated_at = ?"
        " WHERE conversation_id = ? AND reply_id = ? AND finished_at IS NULL",
        (now, *keys),
    )


def set_writers(conn: sqlite3.Connection, keys: Sequence[tuple[str, str]], now: float) -> None:
    conn.executemany(
        "UPDATE replies SET updated_at = ?"
        " WHERE conversation_id = ? AND reply_id = ? AND finished_at IS NULL",
        [(now, *k) for k in keys],
    )


KEYS_PER_STATEMENT = 400  # two parameters each: under the 999 of older SQLite builds


def _by_keys_sql(columns: str, count: int) -> str:
    """`columns` of the kept replies among `count` keys, each looked up in the unique index:
    a CROSS JOIN from the keys (an `IN (VALUES ...)` of row values scans the whole table)."""
    wanted = ", ".join(["(?, ?)"] * count)
    return (
        f"WITH wanted (c, r) AS (VALUES {wanted})"  # noqa: S608 - placeholders and constants
        f" SELECT c, r, {columns} FROM wanted"
        f" CROSS JOIN replies ON conversation_id = c AND reply_id = r WHERE NOT {EXPIRED}"
    )


def _by_keys(
    conn: sqlite3.Connection,
    columns: str,
    keys: Sequence[tuple[str, str]],
    now: float,
    retention: float,
) -> Iterator[tuple[Any, ...]]:
    """The rows of `_by_keys_sql`, a statement per `KEYS_PER_STATEMENT` keys."""
    limits = _limits(now, retention)
    for start in range(0, len(keys), KEYS_PER_STATEMENT):
        chunk = keys[start : start + KEYS_PER_STATEMENT]
        params = (*(part for key in chunk for part in key), *limits)
        yield from conn.execute(_by_keys_sql(columns, len(chunk)), params)


def controls(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]], now: float, retention: float
) -> list[ReplyControl]:
    """`control` of many replies, in their order, with a statement per few hundred: the
    flusher asks for every reply in flight, and a statement each was 10 ms per 1,000 on
    the reader's thread, which had to win the GIL back from the busy loop every time."""
    columns = "cancel_requested, reader_seen_at, updated_at"
    found = {
        (cid, rid): ReplyControl(bool(cancel), reader, writer)
        for cid, rid, cancel, reader, writer in _by_keys(conn, columns, keys, now, retention)
    }
    missing = ReplyControl(cancel_requested=False, reader_seen_at=None)
    return [found.get(key, missing) for key in keys]


def progress(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]], now: float, retention: float
) -> dict[tuple[str, str], tuple[int, bool]]:
    """The last seq in the log and whether it finished, of each kept reply among `keys`
    (one that is not kept is left out): what followers of other processes' replies poll."""
    columns = "last_seq, finished_at IS NOT NULL"
    return {
        (cid, rid): (last_seq, bool(finished))
        for cid, rid, last_seq, finished in _by_keys(conn, columns, keys, now, retention)
    }


def control(
    conn: sqlite3.Connection, keys: tuple[str, str], now: float, retention: float
) -> ReplyControl:
    row = conn.execute(
        f"SELECT cancel_requested, reader_seen_at, NOT {EXPIRED}, updated_at FROM replies"  # noqa: S608 - constant
        " WHERE conversation_id = ? AND reply_id = ?",
        (*_limits(now, retention), *keys),
    ).fetchone()
    if row is None or not row[2]:
        return ReplyControl(cancel_requested=False, reader_seen_at=None)
    return ReplyControl(cancel_requested=bool(row[0]), reader_seen_at=row[1], writer_seen_at=row[3])
