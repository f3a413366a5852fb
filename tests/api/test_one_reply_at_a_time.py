"""One reply at a time per conversation: a new message supersedes the reply still generating,
so the history alternates and each reply follows its own message, in every deployment."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from livesupport import ServerProcess, parse_sse, post_chat
from shutdownsupport import RawStream


def history(server: ServerProcess, cid: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = httpx.get(
        f"{server.url}/conversations/{cid}/history", timeout=10
    ).json()["messages"]
    return messages


def sharing_one_store(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> tuple[ServerProcess, ServerProcess]:
    """Two server processes on one SQLite file: a reply one generates, the other must reach."""
    store = {"STORE_URL": f"sqlite:///{tmp_path}/shared.db", "TOKEN_DELAY": "0.05"}
    return start_server(**store), start_server(**store)


def assert_alternates(messages: list[dict[str, Any]]) -> None:
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * (len(roles) // 2), roles


def test_a_new_message_supersedes_the_reply_still_generating(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.05")
    with RawStream(server, "Tell me a story") as story:
        seen = story.until(b"event: message", 3)
        cid = seen[0].data["conversation_id"]
        started = time.monotonic()
        second = post_chat(server.url, data={"message": "What is 2 + 2?", "conversation_id": cid})
        assert time.monotonic() - started < 2
        assert second.status == 200
        assert second.last.data["content"].startswith("2 + 2 = 4")
        ended = story.to_end()
    assert ended[-1].event == "error"
    assert ended[-1].data["error"]["code"] == "superseded"
    assert ended[-1].data["error"]["retryable"] is False
    said = "".join(e.data["content"] for e in ended if e.event == "message")
    messages = history(server, cid)
    assert_alternates(messages)
    assert [m["content"] for m in messages[:3]] == ["Tell me a story", said, "What is 2 + 2?"]
    assert messages[3]["content"] == second.last.data["content"]
    assert messages[1]["status"] == "interrupted"
    assert messages[1]["meta"] == {"finish_reason": "superseded"}


def test_a_reply_whose_client_left_is_superseded_not_filed_after_the_next_turn(
    start_server: Callable[..., ServerProcess],
) -> None:
    """It used to keep generating through the grace window and be stored after the next turn."""
    server = start_server(TOKEN_DELAY="0.05", DISCONNECT_GRACE_SECONDS="10")
    with RawStream(server, "Tell me a story") as story:
        cid = story.until(b"event: message", 2)[0].data["conversation_id"]
    second = post_chat(server.url, data={"message": "What is 2 + 2?", "conversation_id": cid})
    assert second.last.event == "completed"
    messages = history(server, cid)
    assert_alternates(messages)
    assert messages[1]["status"] == "interrupted"
    assert messages[3]["content"].startswith("2 + 2 = 4")


def test_racing_messages_get_one_reply_each_or_409(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.02")
    cid = post_chat(server.url, data={"message": "hello"}).events[0].data["conversation_id"]
    outcomes: list[tuple[int, str]] = []

    def send(n: int) -> None:
        response = httpx.post(
            server.url + "/chat",
            data={"message": f"What is {n} + {n}?", "conversation_id": cid},
            timeout=30,
        )
        code = response.json()["error"]["code"] if response.status_code != 200 else ""
        outcomes.append((response.status_code, code))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _ in outcomes} <= {200, 409}
    assert {code for status, code in outcomes if status == 409} <= {"turn_in_progress"}
    assert any(status == 200 for status, _ in outcomes)
    messages = history(server, cid)
    assert_alternates(messages)
    assert len(messages) == 2 + 2 * sum(status == 200 for status, _ in outcomes)


def test_a_reply_generated_by_another_process_is_cancelled_through_the_store(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    first, other = sharing_one_store(start_server, tmp_path)
    with RawStream(first, "Tell me a story") as story:
        cid = story.until(b"event: message", 3)[0].data["conversation_id"]
        second = post_chat(other.url, data={"message": "What is 2 + 2?", "conversation_id": cid})
        assert second.last.data["content"].startswith("2 + 2 = 4")
        ended = story.to_end()
    assert ended[-1].data["error"]["code"] == "cancelled"
    messages = history(other, cid)
    assert_alternates(messages)
    assert messages[1]["status"] == "interrupted"


def test_a_reply_whose_process_died_does_not_block_the_conversation(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    doomed, other = sharing_one_store(start_server, tmp_path)
    with RawStream(doomed, "Tell me a story") as story:
        seen = story.until(b"event: message", 2)
        cid, orphan = seen[0].data["conversation_id"], seen[0].data["message_id"]
        doomed.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        doomed.proc.wait(10)  # type: ignore[union-attr]
    started = time.monotonic()
    second = post_chat(other.url, data={"message": "What is 2 + 2?", "conversation_id": cid})
    assert second.last.data["content"].startswith("2 + 2 = 4")
    assert time.monotonic() - started < 6  # the orphan is found and ended, once
    ended = httpx.get(  # the orphan's log has its end now: followers stop at once too
        f"{other.url}/conversations/{cid}/stream",
        headers={"Last-Event-ID": f"{orphan}:0"},
        timeout=10,
    )
    assert ended.status_code == 200
    assert parse_sse(ended.content)[0][-1].data["error"]["code"] == "interrupted"
    third = post_chat(other.url, data={"message": "What is 3 + 3?", "conversation_id": cid})
    assert third.last.data["content"].startswith("3 + 3 = 6")
    messages = history(other, cid)
    assert_alternates(messages)  # the orphan was stored, interrupted, with what its log had
    assert (messages[1]["id"], messages[1]["status"]) == (orphan, "interrupted")
