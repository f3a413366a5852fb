"""SQLiteStore beyond the contract: pragmas, the file on disk, the event loop, other processes.

Everything runs against real files in `tmp_path`; other processes are real OS
processes (as gunicorn workers are), and lock contention comes from a second
real connection, never from mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chatbot_sse.domain import Message, Role, new_conversation_id, new_message_id
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores.sqlite import SCHEMA_VERSION, SQLiteStore

T0 = 1_700_000_000.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "chat.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    await store.open()
    yield store
    await store.close()


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another worker would) holding the write lock until COMMIT."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
        if other.in_transaction:
            other.execute("COMMIT")
    finally:
        other.close()


def message(conversation_id: str, content: str) -> Message:
    return Message(new_message_id(), conversation_id, Role.USER, content, T0)


async def test_pragmas_in_effect(store: SQLiteStore) -> None:
    assert await store.pragmas() == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "busy_timeout": 5000,
        "foreign_keys": 1,
        "user_version": SCHEMA_VERSION,
    }


async def test_open_creates_directory_file_and_schema(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    assert not db_path.parent.exists(), "nothing may touch the disk before open()"
    await store.open()
    await store.open()  # a second open is a no-op
    await store.close()
    assert await asyncio.to_thread(db_path.is_file)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        assert {"conversations", "messages", "messages_by_conversation"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persisted in the file
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_data_persists_across_close_and_reopen(db_path: Path) -> None:
    first = SQLiteStore(db_path)
    await first.open()
    conversation_id = new_conversation_id()
    await first.create_conversation(conversation_id, T0)
    sent = [message(conversation_id, f"m{i}") for i in range(3)]
    for m in sent:
        await first.append_message(m)
    await first.close()

    second = SQLiteStore(db_path)
    await second.open()  # schema creation is idempotent
    try:
        conversation = await second.get_conversation(conversation_id)
        assert conversation is not None
        assert conversation.created_at == T0
        assert await second.history(conversation_id) == sent
    finally:
        await second.close()


async def test_event_loop_runs_while_a_write_waits_for_the_lock(
    store: SQLiteStore, db_path: Path
) -> None:
    conversation_id = new_conversation_id()
    await store.create_conversation(conversation_id, T0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        with write_lock_held(db_path):
            append = asyncio.create_task(store.append_message(message(conversation_id, "late")))
            await asyncio.sleep(0.3)
            assert not append.done(), "the write must wait for the other writer's lock"
            assert ticks >= 10, f"the event loop was blocked: {ticks} ticks in 0.3 s"
        await asyncio.wait_for(append, 5)
    finally:
        ticking.cancel()
    assert [m.content for m in await store.history(conversation_id)] == ["late"]


async def test_lock_held_past_busy_timeout_is_store_unavailable(db_path: Path) -> None:
    store = SQLiteStore(db_path, busy_timeout_ms=100)
    await store.open()
    try:
        with write_lock_held(db_path):
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.create_conversation(new_conversation_id(), T0)
            assert len(await store.history(new_conversation_id())) == 0  # WAL: reads still work
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.ping()  # but writes fail, so /health says degraded
        await store.ping()  # the store recovers once the lock is gone
        conversation_id = new_conversation_id()
        await store.create_conversation(conversation_id, T0)
        await store.append_message(message(conversation_id, "after"))
        assert len(await store.history(conversation_id)) == 1
    finally:
        await store.close()


def read_only_probe(path: Path) -> subprocess.CompletedProcess[str]:
    """Make `path` read-only and open it in a fresh process that, even as root, can't write it."""
    script = """
import asyncio, sys
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores.sqlite import SQLiteStore

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    try:
        await store.open()
    except StoreUnavailable as exc:
        print("StoreUnavailable:", exc)
    else:
        print("opened")
    finally:
        await store.close()

asyncio.run(main())
"""
    command = [sys.executable, "-c", script, str(path)]
    if os.geteuid() == 0:  # root writes anything unless it drops CAP_DAC_OVERRIDE
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: can't make a file read-only")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


async def test_read_only_file_is_store_unavailable(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    await store.create_conversation(new_conversation_id(), T0)
    await store.close()
    result = await asyncio.to_thread(read_only_probe, db_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("StoreUnavailable:"), result.stdout + result.stderr
    assert "readonly" in result.stdout


async def test_newer_schema_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteStore(db_path)
    with pytest.raises(StoreUnavailable, match="newer"):
        await store.open()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()


def write_garbage(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"this is not a database" * 100)


def make_directory(path: Path) -> None:
    path.mkdir(parents=True)


def make_parent_a_file(path: Path) -> None:
    path.parent.write_text("")


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (write_garbage, "not a database"),
        (make_directory, "unable to open"),
        (make_parent_a_file, "File exists"),
    ],
)
async def test_unusable_path_is_store_unavailable(
    tmp_path: Path, spoil: Callable[[Path], None], match: str
) -> None:
    path = tmp_path / "dir" / "chat.db"
    spoil(path)
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match=match):
        await store.open()
    await store.close()


def test_from_url_paths() -> None:
    from chatbot_sse.stores.sqlite import from_url

    assert from_url("sqlite:///data/chatbot.db").path == Path("data/chatbot.db")
    assert from_url("sqlite:////var/lib/chat.db").path == Path("/var/lib/chat.db")
    assert from_url("sqlite:///with%20space.db").path == Path("with space.db")


WORKER = """
import asyncio, json, os, sys, time
from pathlib import Path
from chatbot_sse.domain import Message, Role, new_message_id
from chatbot_sse.stores.sqlite import SQLiteStore

async def main(path, worker, conversations, count, gate):
    Path(gate, f"ready-{worker}").touch()
    while not Path(gate, "go").exists():
        time.sleep(0.001)
    store = SQLiteStore(path)
    await store.open()  # all workers open the fresh file at once
    created = 0
    for cid in conversations:
        try:
            await store.create_conversation(cid, time.time())
            created += 1
        except ValueError:
            pass  # another worker won the race

    async def writer(cid):
        for i in range(count):
            text = f"{worker}:{i}"
            await store.append_message(Message(new_message_id(), cid, Role.USER, text, time.time()))

    await asyncio.gather(*(writer(cid) for cid in conversations))
    await store.close()
    print(json.dumps({"created": created}))

path, worker, conversations, count, gate = sys.argv[1:]
asyncio.run(main(path, int(worker), conversations.split(","), int(count), gate))
"""


def run_workers(path: Path, workers: int, conversations: list[str], count: int) -> list[str]:
    """Start `workers` processes, release them at once, return what each printed."""
    gate = path.parent / "gate"
    gate.mkdir()
    args = [",".join(conversations), str(count), str(gate)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(w), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(list(gate.glob("ready-*"))) < workers and time.monotonic() < deadline:
            time.sleep(0.01)
        (gate / "go").touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [out for out, _ in outputs]


async def test_processes_share_one_file(tmp_path: Path) -> None:
    """Five worker processes open a fresh file at once and append to the same conversations."""
    workers, per_conversation = 5, 40
    conversations = [new_conversation_id() for _ in range(3)]
    path = tmp_path / "shared.db"
    outputs = await asyncio.to_thread(run_workers, path, workers, conversations, per_conversation)
    assert sum(json.loads(out)["created"] for out in outputs) == len(conversations)

    store = SQLiteStore(path)
    await store.open()
    try:
        for cid in conversations:
            history = await store.history(cid)
            contents = [m.content for m in history]
            expected = {f"{w}:{i}" for w in range(workers) for i in range(per_conversation)}
            assert len(contents) == len(expected), "every message exactly once"
            assert set(contents) == expected
            for w in range(workers):  # each worker's own appends keep their order
                mine = [int(c.split(":")[1]) for c in contents if c.startswith(f"{w}:")]
                assert mine == list(range(per_conversation))
            assert await store.history(cid, limit=25) == history[-25:]
        all_ids = [m.id for cid in conversations for m in await store.history(cid)]
        assert len(set(all_ids)) == len(all_ids)
    finally:
        await store.close()
