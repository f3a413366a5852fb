"""Logs: no message content at INFO unless LOG_CONTENT=true; request ids on request lines."""

from __future__ import annotations

from collections.abc import Callable

from hardsupport import log_records

from livesupport import ServerProcess, post_chat

SECRET = "my password is hunter2-zebra"


def test_no_content_in_logs_by_default(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(LOG_LEVEL="INFO")
    stream = post_chat(server.url, data={"message": SECRET})
    failed = post_chat(server.url, data={"message": "/simulate error"})
    assert stream.last.event == "completed"
    assert failed.last.event == "error"
    log = server.log()
    assert "hunter2" not in log
    assert stream.last.data["content"][:40] not in log
    finished = [r for r in log_records(server) if r.get("event") == "turn_finished"]
    assert len(finished) == 2
    assert all(r["request_id"] and "content" not in r for r in finished)
    assert len({r["request_id"] for r in finished}) == 2


def test_log_content_true_logs_it(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(LOG_LEVEL="INFO", LOG_CONTENT="true")
    stream = post_chat(server.url, data={"message": SECRET})
    records = log_records(server)
    user = [r for r in records if r.get("event") == "user_message"]
    assert [r["content"] for r in user] == [SECRET]
    finished = [r for r in records if r.get("event") == "turn_finished"]
    assert finished[0]["content"] == stream.last.data["content"]
    assert user[0]["request_id"] == finished[0]["request_id"]
