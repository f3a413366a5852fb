"""The SQLite store's writer lock: writers of every process take turns through one `flock`.

Another real process holds the lock here, as another gunicorn worker in the
middle of a commit would; the store's write waits for it, then commits.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chatbot_sse.domain import new_conversation_id
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores.sqlite import SQLiteStore

HOLD = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.readline()  # until the test says so
    """
)


async def test_a_write_waits_for_the_process_holding_the_lock(
    store: SQLiteStore, tmp_path: Path
) -> None:
    lock_file = tmp_path / "chat.db-writer.lock"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(lock_file),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert (await holder.stdout.readline()).strip() == b"held"
        conversation_id = new_conversation_id()
        write = asyncio.ensure_future(store.create_conversation(conversation_id, time.time()))
        await asyncio.sleep(0.5)
        assert not write.done()  # waiting for the other process's turn
        assert await store.get_conversation(conversation_id) is None  # reads don't wait
        holder.stdin.write(b"\n")
        await holder.stdin.drain()
        await asyncio.wait_for(write, timeout=10)
        assert await store.get_conversation(conversation_id) is not None
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.communicate()


async def test_the_lock_is_taken_and_given_back_for_each_commit(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Between commits nobody holds it: another process takes it at once."""
    await store.create_conversation(new_conversation_id(), time.time())
    lock_file = tmp_path / "chat.db-writer.lock"
    assert lock_file.exists()
    probe = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), "
    probe += "fcntl.LOCK_EX | fcntl.LOCK_NB)"
    taken = await asyncio.create_subprocess_exec(sys.executable, "-c", probe, str(lock_file))
    assert await taken.wait() == 0


async def test_a_lock_file_that_cannot_be_created_is_a_store_error(
    store: SQLiteStore, tmp_path: Path
) -> None:
    (tmp_path / "chat.db-writer.lock").mkdir()  # in the lock file's way: open() fails
    with pytest.raises(StoreUnavailable):
        await store.create_conversation(new_conversation_id(), time.time())
