"""`Idempotency-Key` on POST /chat: a retry adds no turn and gets the same reply, on any worker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from hardsupport import KEY_A, KEY_B, KEYS, bearer

from chatbot_sse.api import idempotency
from chatbot_sse.api.body import ChatRequest
from chatbot_sse.stores.sqlite import SQLiteStore
from livesupport import ServerProcess, Stream, post_chat


def send(server: ServerProcess, key: str, api_key: str = KEY_A, **fields: str) -> Stream:
    headers = {**bearer(api_key), "Idempotency-Key": key}
    return post_chat(server.url, json=fields, headers=headers)


def history(server: ServerProcess, cid: str, api_key: str = KEY_A) -> list[dict[str, str]]:
    url = f"{server.url}/conversations/{cid}/history"
    messages: list[dict[str, str]] = httpx.get(url, headers=bearer(api_key)).json()["messages"]
    return messages


def test_retries_across_workers_add_no_turn(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("gunicorn", WORKERS="3", API_KEYS=KEYS)
    key = str(uuid.uuid4())
    first = send(server, key, message="Hello, my name is Grace")
    assert first.last.event == "completed"
    cid = first.events[0].data["conversation_id"]
    for _ in range(4):  # new connections: other workers answer some of these
        again = send(server, key, message="Hello, my name is Grace")
        assert again.status == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["x-conversation-id"] == cid
        assert [e.id for e in again.events] == [e.id for e in first.events]
        assert again.last.data["content"] == first.last.data["content"]
    assert [m["role"] for m in history(server, cid)] == ["user", "assistant"]

    # The same key with another body is a conflict, and adds nothing either.
    other = send(server, key, message="Something else")
    assert other.status == 409
    assert json.loads(other.raw)["error"]["code"] == "idempotency_key_reused"
    # A continuation with its own key is a new turn, retried just the same.
    follow = str(uuid.uuid4())
    second = send(server, follow, message="What is my name?", conversation_id=cid)
    assert "Grace" in second.last.data["content"]
    assert send(server, follow, message="What is my name?", conversation_id=cid).status == 200
    assert len(history(server, cid)) == 4
    # Keys are per API key: B's identical request is B's own, new conversation.
    theirs = send(server, key, api_key=KEY_B, message="Hello, my name is Grace")
    assert theirs.status == 200
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.events[0].data["conversation_id"] != cid


def test_a_retry_during_the_reply_follows_it(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("gunicorn", WORKERS="2", TOKEN_DELAY="0.02")
    key = str(uuid.uuid4())
    results: dict[str, Stream] = {}

    def first() -> None:
        results["first"] = post_chat(
            server.url, data={"message": "Tell me a story"}, headers={"Idempotency-Key": key}
        )

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.3)  # the first reply is under way
    retried = post_chat(
        server.url, data={"message": "Tell me a story"}, headers={"Idempotency-Key": key}
    )
    thread.join(30)
    original = results["first"]
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.last.event == original.last.event == "completed"
    assert retried.last.data["content"] == original.last.data["content"]
    cid = original.events[0].data["conversation_id"]
    messages = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
    assert len(messages) == 2


def test_a_retry_after_the_events_expired_is_rebuilt_from_history(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(EVENT_RETENTION_SECONDS="0.2")
    key = str(uuid.uuid4())
    first = post_chat(server.url, data={"message": "Hello"}, headers={"Idempotency-Key": key})
    time.sleep(0.5)
    again = post_chat(server.url, data={"message": "Hello"}, headers={"Idempotency-Key": key})
    assert again.headers["idempotent-replayed"] == "true"
    assert [e.event for e in again.events] == ["connected", "message", "completed"]
    assert again.last.data["content"] == first.last.data["content"]
    assert again.last.data["message_id"] == first.last.data["message_id"]


def test_a_request_that_failed_before_its_reply_is_retried_for_real(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    key = str(uuid.uuid4())
    body = {"message": "Hello", "conversation_id": "f" * 32}
    for _ in range(2):  # not a 409: the first attempt's record was dropped
        response = post_chat(server.url, json=body, headers={"Idempotency-Key": key})
        assert response.status == 404
    bad = post_chat(server.url, data={"message": "Hi"}, headers={"Idempotency-Key": "a b"})
    assert bad.status == 422
    assert json.loads(bad.raw)["error"]["code"] == "invalid_idempotency_key"


def test_a_retry_after_its_conversation_was_deleted_is_404(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "idempotent.db"
    server = start_server(STORE_URL=f"sqlite:///{db}")
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    first = post_chat(server.url, data={"message": "Hello"}, headers=headers)
    cid = first.events[0].data["conversation_id"]
    assert httpx.delete(f"{server.url}/conversations/{cid}", timeout=10).status_code == 204
    # Seconds after the first request, nothing of it may only mean it is still starting.
    soon = post_chat(server.url, data={"message": "Hello"}, headers=headers)
    assert soon.status == 409
    assert json.loads(soon.raw)["error"]["code"] == "idempotency_in_progress"

    # A minute on, it is not: the record as the first request would have left it then.
    minute_ago = f"{time.time_ns() // 1_000_000 - 60_000:012x}0000{'0' * 12}"
    scope = idempotency.scope_key(None, key)
    body = idempotency.fingerprint(ChatRequest("Hello", None))

    async def backdate() -> None:
        store = SQLiteStore(db)
        await store.open()
        try:
            await store.forget_idempotency(scope)
            assert await store.remember_idempotency(scope, body, f"{cid}:{minute_ago}", 60) is None
        finally:
            await store.close()

    asyncio.run(backdate())
    later = post_chat(server.url, data={"message": "Hello"}, headers=headers)
    assert later.status == 404
    error = json.loads(later.raw)["error"]
    assert error["code"] == "conversation_not_found"
    assert "was deleted" in error["message"]
