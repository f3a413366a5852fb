"""SQLiteStore's reply log beyond the contract: migration, pruning, pragmas, other processes.

Real files in `tmp_path`; the other process is a real OS process appending to
the same file, as another gunicorn worker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chatbot_sse.domain import Message, Role, new_conversation_id, new_message_id
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores import _sqlite_replies as replies_log
from chatbot_sse.stores._retention import ABANDONED_AFTER, PRUNE_EVERY
from chatbot_sse.stores._sqlite_sql import prepare
from chatbot_sse.stores.base import EventRun, LogAppend, ReplyEvents
from chatbot_sse.stores.sqlite import SCHEMA_VERSION, SQLiteStore

T0 = 1_700_000_000.0

V1_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id), role TEXT NOT NULL,
    content TEXT NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}');
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);
INSERT INTO conversations VALUES ('c1', 1700000000.0);
INSERT INTO messages (id, conversation_id, role, content, created_at, status)
    VALUES ('m1', 'c1', 'user', 'kept', 1700000000.0, 'complete');
PRAGMA user_version = 1;
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db_path, event_retention=0.2)
    await store.open()
    yield store
    await store.close()


def count_rows(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        replies = conn.execute("SELECT count(*) FROM replies").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM reply_events").fetchone()[0]
        return replies, events


async def test_a_version_1_file_is_migrated_keeping_its_data(db_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.executescript(V1_SCHEMA)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert (await store.pragmas())["user_version"] == SCHEMA_VERSION == 6
        assert [m.content for m in await store.history("c1")] == ["kept"]
        conversation = await store.get_conversation("c1")
        assert conversation is not None
        assert conversation.owner == ""  # version 3 added owners; older rows have none
        await store.append_events("c1", "r1", [(0, b"x")], finished=True)
        assert await store.read_events("c1", "r1") == ReplyEvents([(0, b"x")], True, True)
    finally:
        await store.close()


@contextlib.contextmanager
def older_log(
    path: Path, version: int, event_columns: str, keys: tuple[str, str], last_seq: int
) -> Iterator[tuple[sqlite3.Connection, int]]:
    """The store's file as `version` left it: `reply_events` with only `event_columns`, and
    one reply entered up to `last_seq`; the connection and that reply's row id, to add the
    events the old version wrote."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(
            f"DROP TABLE reply_events; CREATE TABLE reply_events ({event_columns},"
            f" PRIMARY KEY (reply, seq)) WITHOUT ROWID; PRAGMA user_version = {version};"
        )
        cursor = conn.execute(
            "INSERT INTO replies (conversation_id, reply_id, updated_at, last_seq)"
            " VALUES (?, ?, ?, ?)",
            (*keys, time.time(), last_seq),
        )
        assert cursor.lastrowid is not None
        yield conn, cursor.lastrowid


async def test_a_version_4_log_is_migrated_and_reads_back_with_new_rows(db_path: Path) -> None:
    """Version 5 keeps consecutive frames appended together in one row (`span`); rows
    written by version 4, one event each, read as before, beside the new ones."""
    store = SQLiteStore(db_path)
    await store.open()
    await store.close()
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    old = [(seq, b"event: message\nid: r:%d\ndata: {}\n\n" % seq) for seq in range(3)]
    v4_events = "reply INTEGER NOT NULL, seq INTEGER NOT NULL, frame BLOB NOT NULL"
    with older_log(db_path, 4, v4_events, (conversation_id, reply_id), 2) as (conn, reply):
        conn.executemany(
            "INSERT INTO reply_events (reply, seq, frame) VALUES (?, ?, ?)",
            [(reply, seq, frame) for seq, frame in old],
        )
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert (await store.pragmas())["user_version"] == SCHEMA_VERSION
        new = [(seq, b"event: message\nid: r:%d\ndata: {}\n\n" % seq) for seq in range(3, 8)]
        await store.append_events(conversation_id, reply_id, new, finished=True)
        for after in range(-1, 8):
            got = await store.read_events(conversation_id, reply_id, after_seq=after)
            assert got.events == [(seq, f) for seq, f in old + new if seq > after]
    finally:
        await store.close()
    assert count_rows(db_path) == (1, 4)  # three old rows, one new


def reply_frames(conversation_id: str, reply_id: str, count: int) -> list[tuple[int, bytes]]:
    """A reply's frames as the server encodes them: both ids in every event."""
    ids = f'"conversation_id":"{conversation_id}","message_id":"{reply_id}"'
    return [
        (
            seq,
            f'event: message\nid: {reply_id}:{seq}\ndata: {{"content":" w{seq}",{ids}}}\n\n'.encode(),
        )
        for seq in range(count)
    ]


def stored_rows(path: Path) -> list[tuple[int, int, int, int]]:
    """(seq, stored bytes, span, codec) of every row of the log."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT seq, length(frame), span, codec FROM reply_events ORDER BY reply, seq"
        ).fetchall()


async def test_a_whole_reply_is_stored_compressed_and_reads_back_exactly(
    store: SQLiteStore, db_path: Path
) -> None:
    """Version 6: a fast reply's log (one row of 22 frames, 4 KB) is LZ4-compressed to a
    fraction, small enough for its page (no overflow page per reply); a paced reply's
    small appends stay as they are. Every resume point reads the same bytes back."""
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    frames = reply_frames(conversation_id, reply_id, 22)
    await store.append_events(conversation_id, reply_id, frames, finished=True)
    paced_id = new_message_id()
    paced = reply_frames(conversation_id, paced_id, 4)
    await store.append_events(conversation_id, paced_id, paced[:2])
    await store.append_events(conversation_id, paced_id, paced[2:], finished=True)

    rows = stored_rows(db_path)
    whole = sum(len(frame) for _, frame in frames)
    assert whole > 3000
    assert rows[0][2:] == (22, replies_log.LZ4)
    assert rows[0][1] < whole / 4
    assert [row[2:] for row in rows[1:]] == [(2, replies_log.PLAIN)] * 2
    for after in range(-1, 22):
        got = await store.read_events(conversation_id, reply_id, after_seq=after)
        assert got == ReplyEvents([e for e in frames if e[0] > after], finished=True, exists=True)
    got = await store.read_events(conversation_id, paced_id, after_seq=0)
    assert got.events == paced[1:]


async def test_an_event_run_is_one_row_as_it_is(
    store: SQLiteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply hub's own frames (`EventRun`: one event each, by `sse`'s making) go in one
    row without a search of each frame for a blank line inside; they read back exactly."""
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    frames = reply_frames(conversation_id, reply_id, 22)
    plain_id = new_message_id()
    plain = reply_frames(conversation_id, plain_id, 22)
    await store.append_events(conversation_id, plain_id, plain, finished=True)

    def searched(frame: bytes) -> bool:
        raise AssertionError("a frame of an EventRun was searched")

    run = EventRun(0, [frame for _, frame in frames])
    await store.append_events(conversation_id, reply_id, run[:5])  # a plain list: searched
    monkeypatch.setattr(replies_log, "_one_event", searched)
    await store.append_events(conversation_id, reply_id, EventRun(5, run.frames[5:]), True)

    rows = stored_rows(db_path)
    assert [row[2:] for row in rows] == [
        (22, replies_log.LZ4),
        (5, replies_log.LZ4),
        (17, replies_log.LZ4),
    ]
    for after in range(-1, 22):
        got = await store.read_events(conversation_id, reply_id, after_seq=after)
        assert got == ReplyEvents([e for e in frames if e[0] > after], finished=True, exists=True)


def test_rows_are_packed_only_when_big_enough_and_it_helps() -> None:
    small = b"event: message\ndata: {}\n\n"
    assert replies_log.pack(small) == (small, replies_log.PLAIN)
    noise = os.urandom(2000)  # nothing to compress: stored as it is
    assert replies_log.pack(noise) == (noise, replies_log.PLAIN)
    big = small * 40
    stored, codec = replies_log.pack(big)
    assert codec == replies_log.LZ4
    assert len(stored) < len(big) / 4
    assert replies_log.unpack(stored, codec) == big
    with pytest.raises(sqlite3.DatabaseError, match="unknown codec 7"):
        replies_log.unpack(stored, 7)
    damaged = stored[:4] + b"\xff" * (len(stored) - 4)
    with pytest.raises(sqlite3.DatabaseError, match="corrupt"):
        replies_log.unpack(damaged, codec)


async def test_a_row_that_cannot_be_unpacked_is_a_store_failure(
    store: SQLiteStore, db_path: Path
) -> None:
    """A damaged compressed row fails the read as SQLite's own corruption would:
    `StoreUnavailable`, which a follower turns into an `error` event, never a crash."""
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    await store.append_events(
        conversation_id, reply_id, reply_frames(conversation_id, reply_id, 22), finished=True
    )
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("UPDATE reply_events SET frame = x'ffffffff00112233'")
    with pytest.raises(StoreUnavailable, match="reply log row is corrupt"):
        await store.read_events(conversation_id, reply_id)


async def test_a_version_5_log_is_migrated_and_its_plain_rows_read_back(db_path: Path) -> None:
    """Rows written before version 6 (no `codec`: plain frames) read as before, beside
    compressed ones appended after the migration."""
    store = SQLiteStore(db_path)
    await store.open()
    await store.close()
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    frames = reply_frames(conversation_id, reply_id, 30)
    old, new = frames[:10], frames[10:]
    v5_events = (
        "reply INTEGER NOT NULL, seq INTEGER NOT NULL, frame BLOB NOT NULL,"
        " span INTEGER NOT NULL DEFAULT 1"
    )
    with older_log(db_path, 5, v5_events, (conversation_id, reply_id), 9) as (conn, reply):
        conn.execute(
            "INSERT INTO reply_events (reply, seq, frame, span) VALUES (?, 0, ?, 10)",
            (reply, b"".join(frame for _, frame in old)),
        )
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert (await store.pragmas())["user_version"] == SCHEMA_VERSION
        await store.append_events(conversation_id, reply_id, new, finished=True)
        for after in range(-1, 30):
            got = await store.read_events(conversation_id, reply_id, after_seq=after)
            assert got.events == [e for e in frames if e[0] > after]
    finally:
        await store.close()
    assert [row[2:] for row in stored_rows(db_path)] == [
        (10, replies_log.PLAIN),
        (20, replies_log.LZ4),
    ]


def test_continuations_are_appended_without_a_statement_per_reply(db_path: Path) -> None:
    """The flusher's round (every reply in flight, continued) is two `executemany`, not a
    read and two writes per reply. A round with anything else goes one by one, where only
    what is not a continuation reads its reply first."""
    now = time.time()
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        prepare(conn, db_path, 1000)
        keys = [(new_conversation_id(), new_message_id()) for _ in range(50)]
        for key in keys:
            replies_log.append(conn, key, [], False, now, 300)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)

        def round_of(start: int) -> list[LogAppend]:
            return [
                LogAppend(*key, [(s, b"event: message\ndata: {}\n\n") for s in (start, start + 1)])
                for key in keys
            ]

        replies_log.append_many(conn, round_of(0), now, 300)
        reads = [s for s in statements if s.startswith("SELECT id, last_seq")]
        assert reads == []
        replies_log.append_many(conn, [*round_of(2)[:-1], round_of(0)[-1]], now, 300)
        reads = [s for s in statements if s.startswith("SELECT id, last_seq")]
        assert len(reads) == 1  # the last re-sent what was kept: it alone takes the general way
        conn.set_trace_callback(None)
        for n, key in enumerate(keys):
            kept = replies_log.read(conn, key, -1, now, 300).events
            assert [seq for seq, _ in kept] == ([0, 1] if n == 49 else [0, 1, 2, 3])


def test_controls_look_each_reply_up_in_a_statement_per_few_hundred(db_path: Path) -> None:
    """The flusher reads the controls of every reply in flight every half second: a statement
    per few hundred, each looking its keys up in the unique index, never scanning `replies`
    (which holds every reply of the retention window); an expired one reads as unknown."""
    now = time.time()
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        prepare(conn, db_path, 1000)
        keys = [(new_conversation_id(), new_message_id()) for _ in range(900)]
        for key in keys:
            replies_log.enter(conn, key, now, 300, sweep=False)
        old = (new_conversation_id(), new_message_id())
        replies_log.enter(conn, old, now - ABANDONED_AFTER - 1, 300, sweep=False)
        replies_log.set_reader(conn, keys[450], now)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        controls = replies_log.controls(conn, [*keys, old], now, 300)
        conn.set_trace_callback(None)
        assert len(statements) == 3  # 901 keys, 400 per statement
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statements[0], []))
        assert "SCAN replies" not in plan
        assert "SEARCH replies USING INDEX" in plan
    assert [n for n, c in enumerate(controls) if c.reader_seen_at is not None] == [450]
    assert all(c.writer_seen_at is not None for c in controls[:900])
    assert controls[900].writer_seen_at is None


def test_entering_a_known_reply_keeps_it_unless_it_expired(db_path: Path) -> None:
    """`enter` is one insert for a new reply; for a known one it is `append` with no events:
    a kept reply stays as it is, an expired one not yet pruned starts afresh."""
    now = time.time()
    frame = b"event: message\ndata: {}\n\n"
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        prepare(conn, db_path, 1000)
        kept, expired = (new_conversation_id(), new_message_id()), (new_conversation_id(), "r")
        for key, age in ((kept, 10), (expired, 100)):
            replies_log.enter(conn, key, now - age, 30, sweep=False)
            replies_log.append(conn, key, [(0, frame)], True, now - age, 30)
        for key in (kept, expired):
            replies_log.enter(conn, key, now, 30, sweep=False)  # 30 s retention: one expired
        assert replies_log.read(conn, kept, -1, now, 30) == ReplyEvents([(0, frame)], True, True)
        assert replies_log.read(conn, expired, -1, now, 30) == ReplyEvents([], False, True)


async def test_expired_replies_are_deleted_from_the_file(store: SQLiteStore, db_path: Path) -> None:
    conversation_id = new_conversation_id()
    for _ in range(PRUNE_EVERY - 2):  # the store's appends number 1 .. PRUNE_EVERY - 2
        await store.append_events(conversation_id, new_message_id(), [(0, b"x"), (1, b"y")], True)
    running = new_message_id()
    await store.append_events(conversation_id, running, [(0, b"still going")])  # not finished
    assert await asyncio.to_thread(count_rows, db_path) == (PRUNE_EVERY - 1, 2 * PRUNE_EVERY - 3)
    await asyncio.sleep(0.3)
    await store.append_events(conversation_id, running, [(1, b"on")])  # append PRUNE_EVERY sweeps
    assert await asyncio.to_thread(count_rows, db_path) == (1, 2)


async def test_log_writes_leave_the_connection_at_synchronous_full(store: SQLiteStore) -> None:
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    await store.append_events(conversation_id, reply_id, [(0, b"x")])
    await store.mark_reader(conversation_id, reply_id)
    await store.request_cancel(conversation_id, reply_id)
    assert (await store.pragmas())["synchronous"] == 2  # FULL, for the messages


async def test_a_waiting_reader_does_not_hold_the_store_thread(store: SQLiteStore) -> None:
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    await store.create_conversation(conversation_id, T0)
    await store.append_events(conversation_id, reply_id, [(0, b"x")])
    readers = [
        asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=2))
        for _ in range(10)
    ]
    await asyncio.sleep(0.1)
    start = time.monotonic()
    for i in range(10):
        await store.append_message(
            Message(new_message_id(), conversation_id, Role.USER, f"m{i}", T0)
        )
    assert time.monotonic() - start < 0.5
    assert len(await store.history(conversation_id)) == 10
    await store.append_events(conversation_id, reply_id, [(1, b"y")], finished=True)
    results = await asyncio.wait_for(asyncio.gather(*readers), 1)
    assert all(r == ReplyEvents([(1, b"y")], True, True) for r in results)


APPENDER = """
import asyncio, sys, time
from chatbot_sse.stores.sqlite import SQLiteStore

async def main(path, conversation_id, reply_id):
    store = SQLiteStore(path)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    await store.append_events(conversation_id, reply_id, [(1, b"from afar")], finished=True)
    await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_another_process_wakes_a_waiting_reader(store: SQLiteStore, db_path: Path) -> None:
    conversation_id, reply_id = new_conversation_id(), new_message_id()
    await store.append_events(conversation_id, reply_id, [(0, b"here")])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        APPENDER,
        str(db_path),
        conversation_id,
        reply_id,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready\n"
        reader = asyncio.ensure_future(store.read_events(conversation_id, reply_id, 0, wait=10))
        await asyncio.sleep(0.1)
        assert not reader.done()
        start = time.monotonic()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        result = await asyncio.wait_for(reader, 5)
        assert result == ReplyEvents([(1, b"from afar")], finished=True, exists=True)
        assert time.monotonic() - start < 1
    finally:
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 20) == 0


def test_a_sweep_reads_only_what_expired(db_path: Path) -> None:
    """Pruning is two range scans of the expiry indexes (schema version 4), never a scan of
    every reply kept: at 2,000 replies/s a 300 s retention keeps 600,000 of them."""
    now, retention = T0, 300.0
    rows = {  # reply id: (updated_at, finished_at)
        "finished long ago": (now - 400, now - 400),
        "finished just now": (now - 10, now - 10),
        "abandoned": (now - ABANDONED_AFTER - 1, None),
        "in flight": (now - 1, None),
    }
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        prepare(conn, db_path, 1000)
        for reply_id, (updated_at, finished_at) in rows.items():
            cursor = conn.execute(
                "INSERT INTO replies (conversation_id, reply_id, updated_at, finished_at)"
                " VALUES ('c', ?, ?, ?)",
                (reply_id, updated_at, finished_at),
            )
            conn.execute(
                "INSERT INTO reply_events (reply, seq, frame) VALUES (?, 0, x'00')",
                (cursor.lastrowid,),
            )
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN DELETE FROM replies WHERE id IN ({replies_log.SELECT_EXPIRED})",  # noqa: S608 - constant
            (now, now),
        ).fetchall()
        replies_log.prune(conn, now, retention)
        kept = {row[0] for row in conn.execute("SELECT reply_id FROM replies")}
        events = conn.execute("SELECT count(*) FROM reply_events").fetchone()[0]
    assert kept == {"finished just now", "in flight"}
    assert events == 2
    details = " | ".join(str(step[3]) for step in plan)
    assert "replies_finished" in details
    assert "replies_unfinished" in details
    assert "SCAN replies" not in details


async def test_followers_of_another_process_are_polled_together(tmp_path: Path) -> None:
    """Readers waiting for another process's appends cost one statement per poll between them,
    not one each; only the one whose reply moved is woken, with its event."""
    db = tmp_path / "shared.db"
    writer, follower = SQLiteStore(db), SQLiteStore(db)  # two objects: as two processes
    await writer.open()
    await follower.open()
    waits: list[asyncio.Future[ReplyEvents]] = []
    try:
        turns = [(new_conversation_id(), new_message_id()) for _ in range(40)]
        for cid, rid in turns:
            user = Message(new_message_id(), cid, Role.USER, "q", time.time())
            await writer.begin_turn(user, rid, create=True, owner=None, history_limit=0)
        statements: list[str] = []
        await follower._reader.run(lambda conn: conn.set_trace_callback(statements.append))
        waits += [
            asyncio.ensure_future(follower.read_events(cid, rid, after_seq=-1, wait=5))
            for cid, rid in turns
        ]
        await asyncio.sleep(0.5)  # 20 polls of POLL_INTERVAL
        assert not any(w.done() for w in waits)
        reads = [s for s in statements if s.startswith("SELECT id, last_seq")]
        polls = [s for s in statements if s.startswith("WITH wanted")]
        assert len(reads) == len(turns)  # each read once, on arrival
        assert 5 <= len(polls) <= 25
        cid, rid = turns[17]
        await writer.append_events(cid, rid, [(0, b"event: connected\ndata: {}\n\n")])
        woken = await asyncio.wait_for(waits[17], 2)
        assert woken.events == [(0, b"event: connected\ndata: {}\n\n")]
        await asyncio.sleep(0.1)
        assert [n for n, w in enumerate(waits) if w.done()] == [17]
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await follower.close()
        await writer.close()
