"""A SQLite file that stops taking writes at runtime: clear 503s, /health degraded, recovery.

Running as root, file modes stop nothing; `chattr +i` (immutable) does: even a file
descriptor the server already holds can no longer write, as on a read-only disk.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from livesupport import ServerProcess, post_chat
from shutdownsupport import RawStream, assert_acknowledged_in_history


@contextmanager
def immutable(directory: Path) -> Iterator[None]:
    """The directory and every file in it immutable, for the duration, but SQLite's `-shm`.

    The `-shm` file is SQLite's shared-memory index, mapped into every process
    using the database; the kernel answers a write to a mapped page of an
    immutable file with SIGBUS, which kills the process (no error code to
    handle). A file turned read-only under a running server is a fault to
    survive; a memory mapping pulled away is not what a read-only store means.
    """
    paths = [directory, *(p for p in directory.iterdir() if not p.name.endswith("-shm"))]
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def can_make_immutable(directory: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = directory / "probe"
    probe.write_bytes(b"")
    try:
        with immutable(directory):
            pass
    except subprocess.CalledProcessError:
        return False
    finally:
        probe.unlink()
    return True


def test_read_only_sqlite_fails_clearly_and_recovers(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    directory = tmp_path / "db"
    directory.mkdir()
    if not can_make_immutable(directory):
        pytest.skip("chattr +i is not available on this filesystem")
    server = start_server(STORE_URL=f"sqlite:///{directory}/chat.db", TOKEN_DELAY="0.01")
    acknowledged = [post_chat(server.url, data={"message": "Hello, I am Ada"})]
    cid = acknowledged[0].last.data["conversation_id"]
    assert acknowledged[0].last.event == "completed"

    in_flight = RawStream(server, "/simulate slow", cid)
    try:
        in_flight.until(b"event: message")
        with immutable(directory):
            refused = post_chat(
                server.url, data={"message": "Still there?", "conversation_id": cid}
            )
            assert refused.status == 503
            assert refused.headers["content-type"].startswith("application/json")
            assert httpx.Response(503, content=refused.raw).json()["error"]["code"] == (
                "store_unavailable"
            )
            health = httpx.get(server.url + "/health", timeout=10)
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            history = httpx.get(f"{server.url}/conversations/{cid}/history", timeout=10)
            assert history.status_code == 200  # reads still work
            events = in_flight.to_end()
    finally:
        in_flight.close()
    assert events[-1].event in ("completed", "error")

    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the store did not recover"
        time.sleep(0.2)
    again = post_chat(server.url, data={"message": "Back again", "conversation_id": cid})
    assert again.last.event == "completed"
    acknowledged.append(again)
    assert_acknowledged_in_history(server, acknowledged)
    if events[-1].event == "completed":
        done = events[-1].data
        messages = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
        assert any(m["id"] == done["message_id"] for m in messages)
