"""A long conversation read a page at a time, and a conversation deleted, over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatbot_sse.api.streaming import LogSource
from chatbot_sse.domain import new_conversation_id, new_message_id
from chatbot_sse.stores.base import Store
from chatbot_sse.stores.memory import MemoryStore
from chatbot_sse.stores.sqlite import SQLiteStore
from livesupport import ServerProcess, parse_sse, post_chat
from shutdownsupport import RawStream


def history(server: ServerProcess, cid: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/conversations/{cid}/history", params=params, timeout=10)


def conversation(server: ServerProcess, turns: int) -> str:
    cid = ""
    for n in range(turns):
        data = {"message": f"What is {n} + 1?", **({"conversation_id": cid} if cid else {})}
        stream = post_chat(server.url, data=data)
        assert stream.last.event == "completed"
        cid = stream.events[0].data["conversation_id"]
    return cid


def test_history_pages_walk_back_to_the_first_message(server: ServerProcess) -> None:
    cid = conversation(server, 4)
    whole = history(server, cid).json()
    assert len(whole["messages"]) == 8
    assert (whole["has_more"], whole["next_before"]) == (False, None)

    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = history(server, cid, **params)
        assert page.status_code == 200
        body = page.json()
        pages.insert(0, body["messages"])
        if not body["has_more"]:
            assert body["next_before"] is None
            break
        params["before"] = body["next_before"]
    assert [len(page) for page in pages] == [2, 3, 3]
    assert [m for page in pages for m in page] == whole["messages"]

    # A page read before the conversation grew is still the same page after.
    second = history(server, cid, limit=3, before=5).json()
    post_chat(server.url, data={"message": "one more", "conversation_id": cid})
    assert history(server, cid, limit=3, before=5).json() == second
    newest = history(server, cid, limit=2).json()
    asked, answer = newest["messages"]
    assert (asked["role"], asked["content"], answer["role"]) == ("user", "one more", "assistant")
    assert newest["next_before"] == 8
    # `before` alone gives a page of the default size.
    assert len(history(server, cid, before=4).json()["messages"]) == 4


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": 1001},
        {"limit": "ten"},
        {"before": -1},
        {"before": "x"},
    ],
)
def test_history_page_parameters_are_checked(server: ServerProcess, params: dict[str, Any]) -> None:
    cid = conversation(server, 1)
    response = history(server, cid, **params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert next(iter(params)) in error["message"]


def test_deleting_a_conversation_removes_it_for_good(server: ServerProcess) -> None:
    cid = conversation(server, 2)
    reply_id = history(server, cid).json()["messages"][-1]["id"]
    deleted = httpx.delete(f"{server.url}/conversations/{cid}", timeout=10)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert history(server, cid).status_code == 404
    resumed = httpx.get(  # its replies' events went too
        f"{server.url}/conversations/{cid}/stream",
        headers={"Last-Event-ID": f"{reply_id}:0"},
        timeout=10,
    )
    assert resumed.status_code == 404
    again = post_chat(server.url, data={"message": "still there?", "conversation_id": cid})
    assert again.status == 404
    assert json.loads(again.raw)["error"]["code"] == "conversation_not_found"
    twice = httpx.delete(f"{server.url}/conversations/{cid}", timeout=10)
    assert twice.status_code == 404
    assert twice.json()["error"]["code"] == "conversation_not_found"
    malformed = httpx.delete(f"{server.url}/conversations/not-an-id", timeout=10)
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "invalid_conversation_id"


def test_deleting_stops_the_reply_still_generating(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.05")
    with RawStream(server, "Tell me a story") as story:
        cid = story.until(b"event: message", 2)[0].data["conversation_id"]
        deleted = httpx.delete(f"{server.url}/conversations/{cid}", timeout=10)
        assert deleted.status_code == 204
        ended = story.to_end()
    assert ended[-1].event == "error"
    assert ended[-1].data["error"] == {
        "code": "deleted",
        "message": "the conversation was deleted",
        "retryable": False,
    }
    assert history(server, cid).status_code == 404  # the partial reply was not kept either


def test_a_reply_generated_by_another_process_is_stopped_before_the_delete(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    store = {"STORE_URL": f"sqlite:///{tmp_path}/shared.db", "TOKEN_DELAY": "0.05"}
    first, other = start_server(**store), start_server(**store)
    with RawStream(first, "Tell me a story") as story:
        cid = story.until(b"event: message", 2)[0].data["conversation_id"]
        assert httpx.delete(f"{other.url}/conversations/{cid}", timeout=10).status_code == 204
        ended = story.to_end()
    assert ended[-1].event == "error"  # cancelled through the store, as a cancel would be
    assert ended[-1].data["error"]["code"] == "cancelled"
    for server in (first, other):
        assert history(server, cid).status_code == 404


def test_only_its_owner_may_delete_a_conversation(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(API_KEYS="key-ada,key-grace")
    ada, grace = ({"Authorization": f"Bearer {key}"} for key in ("key-ada", "key-grace"))
    cid = (
        post_chat(server.url, data={"message": "hi"}, headers=ada).events[0].data["conversation_id"]
    )
    url = f"{server.url}/conversations/{cid}"
    assert httpx.delete(url, timeout=10).status_code == 401
    assert httpx.delete(url, headers=grace, timeout=10).status_code == 404
    assert httpx.get(url + "/history", headers=ada, timeout=10).status_code == 200
    assert httpx.delete(url, headers=ada, timeout=10).status_code == 204
    assert httpx.get(url + "/history", headers=ada, timeout=10).status_code == 404


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_follower_whose_log_vanished_with_its_conversation_is_told(
    backend: str, tmp_path: Path
) -> None:
    """A reader following a reply through the log that had not read its end when the
    conversation was deleted: its stream ends with `deleted`, not without an end."""
    store: Store = MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "log.db")
    await store.open()
    try:
        cid, rid = new_conversation_id(), new_message_id()
        await store.create_conversation(cid, time.time())
        await store.append_events(cid, rid, [(0, b"event: connected\ndata: {}\n\n")])
        first = await store.read_events(cid, rid, -1)
        source = LogSource(store, cid, rid, -1, first)
        assert await source.next_batch(1.0) == b"event: connected\ndata: {}\n\n"
        assert await store.delete_conversation(cid)
        events, _, _ = parse_sse(await source.next_batch(1.0) or b"")
        assert [(e.event, e.id) for e in events] == [("error", f"{rid}:1")]
        assert events[0].data["error"]["code"] == "deleted"
        assert await source.next_batch(1.0) is None
        # A log that expired while its conversation stays ends as before: nothing to add.
        other = new_message_id()
        await store.create_conversation(kept := new_conversation_id(), time.time())
        await store.append_events(kept, other, [(0, b"data: a\n\n")])
        follower = LogSource(store, kept, other, -1, await store.read_events(kept, other, -1))
        await follower.next_batch(1.0)
        await store.delete_conversation(kept)
        await store.create_conversation(kept, time.time())  # the conversation is back, its log not
        assert await follower.next_batch(1.0) is None
    finally:
        await store.close()
