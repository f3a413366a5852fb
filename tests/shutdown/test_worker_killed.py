"""A gunicorn worker killed with SIGKILL mid-reply: nothing acknowledged is lost, nothing hangs."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from livesupport import ServerProcess, post_chat
from shutdownsupport import RawStream, resume


def log_lines(server: ServerProcess, event: str) -> list[dict[str, object]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                lines.append(record)
    return lines


def worker_of(server: ServerProcess, message_id: str, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in log_lines(server, "turn_started"):
            if record.get("message_id") == message_id:
                return int(str(record["pid"]))
        time.sleep(0.05)
    raise AssertionError(f"no turn_started for {message_id}:\n{server.log()[-3000:]}")


def test_sigkill_mid_reply_keeps_the_message_and_the_conversation(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("gunicorn", WORKERS="2", TOKEN_DELAY="0.05")
    stream = RawStream(server, "Tell me a story")
    try:
        events = stream.until(b"event: message", 3)
        cid = events[0].data["conversation_id"]
        os.kill(worker_of(server, events[0].data["message_id"]), signal.SIGKILL)
        stream.to_end(timeout=10)  # the connection dies with its worker
    finally:
        stream.close()

    history = httpx.get(f"{server.url}/conversations/{cid}/history", timeout=10).json()
    assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["Tell me a story"]

    started = time.monotonic()
    stream = resume(server, cid, None)  # served by the surviving (or restarted) worker
    assert time.monotonic() - started < 15
    assert stream.status == 200
    assert stream.last.event == "error"
    assert stream.last.data["error"]["code"] == "interrupted"
    again = resume(server, cid, stream.last.id)
    assert again.status == 204  # the log now ends there, for everyone

    turn = post_chat(server.url, data={"message": "Are you back?", "conversation_id": cid})
    assert turn.status == 200
    assert turn.last.event == "completed", turn.raw[-500:]
    history = httpx.get(f"{server.url}/conversations/{cid}/history", timeout=10).json()
    users = [m["content"] for m in history["messages"] if m["role"] == "user"]
    assert users == ["Tell me a story", "Are you back?"]
    # The follower that found the orphan stored it, interrupted: the history still alternates.
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * 2
    orphan = history["messages"][1]
    assert (orphan["id"], orphan["status"]) == (events[0].data["message_id"], "interrupted")
    assert orphan["meta"] == {"finish_reason": "interrupted"}


def test_a_silent_but_living_generator_is_not_taken_for_dead(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Its heartbeats keep a follower elsewhere waiting through a long silence."""
    env = {"STORE_URL": f"sqlite:///{tmp_path}/shared.db", "RESPONSE_DELAY": "6.5"}
    generating = start_server(**env)
    following = start_server(**env, KEEPALIVE_SECONDS="4")
    stream = RawStream(generating, "Hello")
    try:
        connected = stream.until(b"event: connected")[0]
        followed = resume(following, connected.data["conversation_id"], connected.id)
    finally:
        stream.close()
    assert followed.status == 200
    assert followed.last.event == "completed", followed.raw[-300:]
    # Pinged every KEEPALIVE_SECONDS of silence, not at every short read of the log.
    assert 1 <= followed.raw.count(b": ping") <= 2
