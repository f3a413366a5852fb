"""`POST /chat` against a live uvicorn: the wire contract of DESIGN.md, event by event."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from livesupport import ServerProcess, Stream


def assert_well_formed(stream: Stream) -> None:
    """Everything the contract promises about one complete reply."""
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in stream.headers
    assert stream.raw.startswith(b"retry: 3000\nevent: connected\n")
    assert stream.retry == 3000
    names = [e.event for e in stream.events]
    assert names[0] == "connected"
    assert names[-1] == "completed"
    assert set(names[1:-1]) == {"message"}
    assert len(names) >= 3
    connected = stream.events[0].data
    cid, mid = connected["conversation_id"], connected["message_id"]
    for seq, event in enumerate(stream.events):
        assert event.data["type"] == event.event
        assert event.id == f"{mid}:{seq}"
        assert event.data["conversation_id"] == cid
        assert event.data["message_id"] == mid
        assert "\n" not in event.raw_data
    completed = stream.last.data
    assert completed["content"] == "".join(e.data["content"] for e in stream.of("message"))
    assert completed["finish_reason"] == "stop"
    usage = completed["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_form_body_streams_a_whole_reply(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    stream = chat(server.url, data={"message": "Hello, how are you?"})
    assert_well_formed(stream)
    assert stream.headers["x-conversation-id"] == stream.events[0].data["conversation_id"]


def test_json_body_streams_a_whole_reply(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    assert_well_formed(chat(server.url, json={"message": "Tell me a story"}))


def test_multipart_body_streams_a_whole_reply(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    stream = chat(server.url, files={"message": (None, "Hi there")})
    assert_well_formed(stream)


def test_no_gzip_even_when_the_client_asks(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    stream = chat(
        server.url, data={"message": "Tell me a story"}, headers={"Accept-Encoding": "gzip"}
    )
    assert_well_formed(stream)


def test_multi_turn_uses_earlier_context(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    first = chat(server.url, data={"message": "Hello, my name is Ada"})
    cid = first.events[0].data["conversation_id"]
    second = chat(server.url, json={"message": "What is my name?", "conversation_id": cid})
    assert_well_formed(second)
    assert second.events[0].data["conversation_id"] == cid
    assert "Ada" in second.last.data["content"]
    # Event ids stay unique and ordered across the conversation's replies.
    ids = [e.id for e in first.events + second.events]
    assert len(set(ids)) == len(ids)
    assert first.events[0].data["message_id"] < second.events[0].data["message_id"]


def test_history_holds_every_turn_oldest_first(
    server: ServerProcess, chat: Callable[..., Stream]
) -> None:
    first = chat(server.url, data={"message": "I like green tea"})
    cid = first.events[0].data["conversation_id"]
    second = chat(server.url, data={"message": "What do I like?", "conversation_id": cid})
    response = httpx.get(f"{server.url}/conversations/{cid}/history")
    assert response.status_code == 200
    body = response.json()
    assert body["conversation_id"] == cid
    messages = body["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "I like green tea"),
        ("assistant", first.last.data["content"]),
        ("user", "What do I like?"),
        ("assistant", second.last.data["content"]),
    ]
    assert [m["id"] for m in messages][1] == first.events[0].data["message_id"]
    assert all(m["status"] == "complete" for m in messages)
    assert all(m["created_at"].endswith("+00:00") for m in messages)
    assert messages == sorted(messages, key=lambda m: m["created_at"])
    assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)


def test_engine_context_is_the_last_max_history_length_messages(
    start_server: Callable[..., ServerProcess], chat: Callable[..., Stream]
) -> None:
    """With 3 messages of context, a name given two turns ago is out of sight."""
    short = start_server(MAX_HISTORY_LENGTH="3")
    first = chat(short.url, data={"message": "Hello, my name is Ada"})
    cid = first.events[0].data["conversation_id"]
    chat(short.url, data={"message": "I like green tea", "conversation_id": cid})
    forgot = chat(short.url, data={"message": "What is my name?", "conversation_id": cid})
    assert_well_formed(forgot)
    assert "Ada" not in forgot.last.data["content"]
    # Storage keeps everything, whatever the context length.
    history = httpx.get(f"{short.url}/conversations/{cid}/history").json()["messages"]
    assert len(history) == 6


def test_seed_python_example_works_as_written(server: ServerProcess) -> None:
    """The README's client: requests, iter_lines, `data: ` lines."""
    import requests

    response = requests.post(f"{server.url}/chat", data={"message": "Hello, how are you?"})  # noqa: S113 - the seed example, as written
    seen = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
            seen.append((data.get("type"), data.get("content", "")))
    assert seen[0] == ("connected", "")
    assert seen[-1][0] == "completed"
    assert "".join(c for t, c in seen if t == "message") == seen[-1][1]


@pytest.mark.parametrize("message", ["/simulate error"])
def test_engine_failure_ends_the_stream_with_an_error_event(
    server: ServerProcess, chat: Callable[..., Stream], message: str
) -> None:
    stream = chat(server.url, data={"message": message})
    assert stream.status == 200
    assert stream.events[0].event == "connected"
    last = stream.last
    assert last.event == "error"
    assert last.data["type"] == "error"
    assert last.data["error"]["code"] == "engine_error"
    assert isinstance(last.data["error"]["retryable"], bool)
    assert last.data["error"]["message"]
    assert not stream.of("completed")
    partial = "".join(e.data["content"] for e in stream.of("message"))
    cid = stream.events[0].data["conversation_id"]
    messages = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "failed"
    assert messages[1]["content"] == partial
    # The conversation stays usable after a failed turn.
    follow_up = chat(server.url, data={"message": "hello again", "conversation_id": cid})
    assert_well_formed(follow_up)
