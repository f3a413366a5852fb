"""A request leaves nothing behind that only the garbage collector can free.

Objects in a reference cycle outlive their request until a collection finds
them, and everything they point to waits with them: a cycle through the
response held its reply's frames, its source and its tasks. At thousands of
replies a second that garbage is what triggered the collections, and full
collections walk every live object: a tenth of the server's CPU went there
(docs/bench.md). The server runs here in its own process (`gcprobe`: the app
plus endpoints that ask its collector), driven over real sockets, once on each
store that talks to something real: SQLite, and Redis (its client's errors
and reconnections must not leave cycles either).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatbot_sse.lifespan import GC_YOUNG_THRESHOLD
from livesupport import BIN, PROTOCOLS, ROOT, ServerProcess, post_chat
from redissupport import delete_prefix, require_redis, unique_prefix

TESTS = Path(__file__).resolve().parent


@dataclass
class ProbeServer(ServerProcess):
    def command(self) -> list[str]:
        return [
            str(BIN / "python"), "-m", "uvicorn", "gcprobe:app", "--app-dir", str(TESTS),
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--http", f"chatbot_sse.request_deadline:{PROTOCOLS['uvicorn']}",
        ]  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def probe(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProbeServer]:
    tmp = tmp_path_factory.mktemp("gcprobe")
    if request.param == "redis":
        redis_url, prefix = require_redis(), unique_prefix()
        store_url = f"{redis_url}?prefix={prefix}"
    else:
        store_url = f"sqlite:///{tmp / 'chat.db'}"
    server = ProbeServer(
        {
            "STORE_URL": store_url,
            "RESPONSE_DELAY": "0",
            "TOKEN_DELAY": "0.01",
            "DISCONNECT_GRACE_SECONDS": "0.2",
            "LOG_LEVEL": "WARNING",
        },
        cwd=ROOT,
    )
    server.log_path = tmp / "server.log"
    server.start()
    for _ in range(3):  # the first requests fill caches and start the hub's flusher
        assert post_chat(server.url, data={"message": "warm up"}).status == 200
    yield server
    server.stop()
    if request.param == "redis":
        delete_prefix(redis_url, prefix)


def garbage_of(probe: ProbeServer, scenario: Callable[[], None]) -> dict[str, Any]:
    """What the server's collector had to free, by type, of what `scenario` made it do."""
    assert httpx.post(probe.url + "/_gc/mark").status_code == 200
    scenario()
    report: dict[str, Any] = httpx.get(probe.url + "/_gc/report").json()
    return report


NOTHING = {"total": 0, "types": {}, "frames": {}, "exceptions": {}}


def test_the_probe_finds_a_cycle(probe: ProbeServer) -> None:
    def make_one() -> None:
        assert httpx.post(probe.url + "/_gc/cycle").status_code == 200

    assert garbage_of(probe, make_one) == {
        "total": 1,
        "types": {"list": 1},
        "frames": {},
        "exceptions": {},
    }


def test_the_probe_names_the_frames_and_exceptions_of_a_cycle(probe: ProbeServer) -> None:
    def make_one() -> None:
        assert httpx.post(probe.url + "/_gc/exception_cycle").status_code == 200

    found = garbage_of(probe, make_one)
    assert found["exceptions"] == {"ValueError": 1}
    assert found["frames"]["gcprobe.py:_keep_own_traceback"] == 1  # its callers' too (f_back)
    assert found["types"]["traceback"] == 1


def test_start_up_freezes_what_lives_for_ever_and_raises_the_young_threshold(
    probe: ProbeServer,
) -> None:
    settings = httpx.get(probe.url + "/_gc/settings").json()
    assert settings["threshold"][0] == GC_YOUNG_THRESHOLD > 700  # Python's default: 700
    assert settings["frozen"] > 10_000  # modules, the app, its settings and routes


def test_completed_replies_new_and_follow_up(probe: ProbeServer) -> None:
    def chats() -> None:
        for n in range(10):
            stream = post_chat(probe.url, data={"message": f"My name is Ada{n}"})
            assert stream.events[-1].event == "completed"
            conversation_id = stream.headers["x-conversation-id"]
            again = post_chat(
                probe.url, json={"message": "what is my name?", "conversation_id": conversation_id}
            )
            assert f"Ada{n}" in again.events[-1].data["content"]
            resumed = httpx.get(f"{probe.url}/conversations/{conversation_id}/stream")
            assert resumed.status_code == 200
            assert "event: completed" in resumed.text

    assert garbage_of(probe, chats) == NOTHING


def test_clients_that_leave_mid_reply(probe: ProbeServer) -> None:
    left: list[str] = []

    def leave() -> None:
        for _ in range(10):
            url = probe.url + "/chat"
            with httpx.stream("POST", url, data={"message": "tell me a story"}) as response:
                left.append(response.headers["x-conversation-id"])
                for line in response.iter_lines():
                    if line.startswith("event: message"):
                        break  # closes the connection mid-reply
        time.sleep(2)  # no reader comes back within the grace (0.2 s): each reply is cancelled

    assert garbage_of(probe, leave) == NOTHING
    for conversation_id in left:
        history = httpx.get(f"{probe.url}/conversations/{conversation_id}/history").json()
        assert history["messages"][-1]["status"] == "interrupted"


def test_failures_and_bad_input(probe: ProbeServer) -> None:
    def fail() -> None:
        for _ in range(5):
            assert post_chat(probe.url, data={"message": "/simulate error"}).events[-1].event == (
                "error"
            )
            assert httpx.post(probe.url + "/chat", data={"message": ""}).status_code == 422
            assert httpx.get(probe.url + "/conversations/nope/history").status_code in (404, 422)

    assert garbage_of(probe, fail) == NOTHING


def test_openai_compatible_completions(probe: ProbeServer) -> None:
    body = {"model": "simulated", "messages": [{"role": "user", "content": "hi"}]}

    def complete() -> None:
        for stream in (True, False):
            for _ in range(5):
                response = httpx.post(
                    probe.url + "/v1/chat/completions", json={**body, "stream": stream}
                )
                assert response.status_code == 200

    assert garbage_of(probe, complete) == NOTHING
