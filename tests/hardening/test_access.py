"""API keys: required everywhere but the public paths; conversations belong to their key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hardsupport import KEY_A, KEY_B, KEYS, bearer, log_records

from livesupport import ServerProcess, post_chat


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("keyed")
    server = ServerProcess(
        {
            "STORE_URL": f"sqlite:///{tmp}/chat.db",
            "RESPONSE_DELAY": "0",
            "TOKEN_DELAY": "0",
            "API_KEYS": KEYS,
        }
    )
    server.log_path = tmp / "server.log"
    server.start()
    yield server
    server.stop()


CID = "0" * 32
PROTECTED = [
    ("POST", "/chat"),
    ("GET", f"/conversations/{CID}/history"),
    ("GET", f"/conversations/{CID}/stream"),
    ("POST", f"/conversations/{CID}/cancel"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_endpoints_need_a_key(keyed: ServerProcess, method: str, path: str) -> None:
    response = httpx.request(method, keyed.url + path, data={"message": "hi"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == 'Bearer realm="chatbot-sse"'
    wrong = httpx.request(method, keyed.url + path, headers=bearer("not-a-key"))
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert "not-a-key" not in wrong.text


def test_v1_answers_401_in_openai_shape(keyed: ServerProcess) -> None:
    response = httpx.get(keyed.url + "/v1/models")
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "unauthorized",
        "invalid_request_error",
        None,
    )
    assert "www-authenticate" in response.headers
    assert httpx.get(keyed.url + "/v1/models", headers=bearer(KEY_A)).status_code == 200


def test_public_paths_need_no_key(keyed: ServerProcess) -> None:
    assert httpx.get(keyed.url + "/health").status_code == 200
    assert httpx.get(keyed.url + "/").status_code == 200
    assert httpx.get(keyed.url + "/static/missing.js").status_code == 404  # not 401


@pytest.mark.parametrize(
    "headers",
    [bearer(KEY_A), {"X-API-Key": KEY_A}, {"Authorization": f"bearer   {KEY_B}"}],
    ids=["bearer", "x-api-key", "lowercase-scheme"],
)
def test_either_header_carries_the_key(keyed: ServerProcess, headers: dict[str, str]) -> None:
    stream = post_chat(keyed.url, data={"message": "Hello"}, headers=headers)
    assert stream.status == 200
    assert stream.last.event == "completed"
    assert httpx.get(keyed.url + "/metrics", headers=headers).status_code == 200


def test_another_keys_conversation_is_not_found_anywhere(keyed: ServerProcess) -> None:
    first = post_chat(keyed.url, data={"message": "Hello, my name is Ada"}, headers=bearer(KEY_A))
    cid = first.events[0].data["conversation_id"]
    reply_id = first.events[0].data["message_id"]
    url = f"{keyed.url}/conversations/{cid}"
    other = bearer(KEY_B)

    assert httpx.get(f"{url}/history", headers=other).status_code == 404
    continued = post_chat(
        keyed.url, data={"message": "What is my name?", "conversation_id": cid}, headers=other
    )
    assert continued.status == 404
    assert json.loads(continued.raw)["error"]["code"] == "conversation_not_found"
    resumed = httpx.get(f"{url}/stream", headers={**other, "Last-Event-ID": f"{reply_id}:0"})
    assert resumed.status_code == 404
    assert httpx.post(f"{url}/cancel", headers=other).status_code == 404
    v1 = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "conversation_id": cid},
        headers=other,
    )
    assert v1.status_code == 404
    assert v1.json()["error"]["code"] == "conversation_not_found"
    # An unknown id answers exactly the same: nothing tells B that the conversation exists.
    unknown = httpx.get(f"{keyed.url}/conversations/{'f' * 32}/history", headers=other)
    assert unknown.json()["error"]["code"] == "conversation_not_found"

    # The owner still has all of it, and B's attempts added nothing.
    mine = bearer(KEY_A)
    history = httpx.get(f"{url}/history", headers=mine).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert httpx.get(f"{url}/stream", headers=mine).status_code in (200, 204)
    assert httpx.post(f"{url}/cancel", headers=mine).json()["status"] == "finished"
    again = post_chat(
        keyed.url, data={"message": "What is my name?", "conversation_id": cid}, headers=mine
    )
    assert "Ada" in again.last.data["content"]
    v1_mine = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "What is my name?"}],
            "conversation_id": cid,
        },
        headers=mine,
    )
    assert v1_mine.status_code == 200
    assert "Ada" in v1_mine.json()["choices"][0]["message"]["content"]


def test_keys_never_reach_the_log(keyed: ServerProcess) -> None:
    httpx.get(keyed.url + "/metrics", headers=bearer("a-wrong-key-12345"))
    post_chat(keyed.url, data={"message": "Hello"}, headers=bearer(KEY_A))
    log = keyed.log()
    for secret in (KEY_A, KEY_B, "a-wrong-key-12345"):
        assert secret not in log
    rejected = [r for r in log_records(keyed) if r.get("event") == "request_rejected"]
    assert rejected
    assert all(r["reason"] == "unauthorized" and r["request_id"] for r in rejected)
