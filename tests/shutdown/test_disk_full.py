"""A SQLite store whose disk fills up at runtime: clear failures, /health degraded, recovery.

The real thing, not a simulation: the database lives on a 2 MiB tmpfs, and a
filler file takes every byte left, so SQLite's writes fail with `SQLITE_FULL`
(or an I/O error) exactly as on a full disk. Mounting needs root (or
CAP_SYS_ADMIN); CI runs as root on the same machine, so the skip is for
developer machines only. The mount is always taken down in teardown.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hardsupport import log_records

from livesupport import ServerProcess, Stream, post_chat
from shutdownsupport import assert_acknowledged_in_history


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own, unmounted afterwards whatever happened."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left; returns it."""
    filler = directory / "filler"
    block = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return filler


def outcome(stream: Stream) -> str:
    """How a chat ended: completed, an `error` event, or a JSON error before the stream."""
    if stream.status == 200:
        assert stream.events, stream.raw[-300:]
        last = stream.last
        if last.event == "error":
            assert last.data["error"]["code"] == "store_unavailable", last.data
            return "error_event"
        assert last.event == "completed", stream.raw[-300:]
        return "completed"
    assert stream.status == 503, stream.raw[:300]
    assert stream.headers["content-type"].startswith("application/json")
    assert httpx.Response(503, content=stream.raw).json()["error"]["code"] == "store_unavailable"
    return "refused"


def test_a_full_disk_fails_clearly_and_recovers_when_space_is_freed(
    start_server: Callable[..., ServerProcess], small_disk: Path
) -> None:
    server = start_server(STORE_URL=f"sqlite:///{small_disk}/chat.db", TOKEN_DELAY="0.001")
    acknowledged = [post_chat(server.url, data={"message": "Hello, I am Ada"})]
    assert acknowledged[0].last.event == "completed"
    cid = acknowledged[0].last.data["conversation_id"]

    filler = fill(small_disk)
    try:
        outcomes = []
        long_message = "a message long enough to need new pages in the log " * 100
        for _ in range(20):  # SQLite may still have room in pages it already holds
            stream = post_chat(
                server.url, data={"message": long_message, "conversation_id": cid}, timeout=30
            )
            outcomes.append(outcome(stream))
            if outcomes[-1] == "completed":
                acknowledged.append(stream)
            else:
                break
        assert outcomes[-1] != "completed", "the full disk never made a write fail"
        health = httpx.get(server.url + "/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        history = httpx.get(f"{server.url}/conversations/{cid}/history", timeout=10)
        assert history.status_code == 200  # reads still work
        logged = [r for r in log_records(server) if r.get("event") == "store_unavailable"]
        assert logged, "an operator learns of the full disk from the log"
        assert "full" in logged[0]["error"] or "I/O" in logged[0]["error"]
    finally:
        filler.unlink()

    deadline = time.monotonic() + 15
    while httpx.get(server.url + "/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the store did not recover after space was freed"
        time.sleep(0.2)
    again = post_chat(server.url, data={"message": "Back again", "conversation_id": cid})
    assert again.last.event == "completed"
    acknowledged.append(again)
    fresh = post_chat(server.url, data={"message": "A new conversation"})
    assert fresh.last.event == "completed"
    acknowledged.append(fresh)
    assert_acknowledged_in_history(server, acknowledged)
