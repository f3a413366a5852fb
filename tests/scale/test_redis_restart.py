"""Redis dies under running instances and comes back: health, clear errors, no hang, recovery.

A private `redis-server` without persistence (`RedisServer`), killed as a crash
would, then started again on the same port: empty, so only what the servers
write after the restart exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from livesupport import Event, ServerProcess, parse_sse, post_chat
from redissupport import RedisServer
from scalesupport import assert_exact_reply


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@dataclass
class Listener:
    """Reads one stream in a thread; `seen(n)` waits for n message events."""

    method: str
    url: str
    kwargs: dict[str, object] = field(default_factory=dict)
    raw: bytes = b""
    ended_at: float | None = None
    failure: BaseException | None = None
    _progress: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Listener:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            with httpx.stream(self.method, self.url, timeout=30, **self.kwargs) as response:  # type: ignore[arg-type]
                for chunk in response.iter_raw():
                    with self._progress:
                        self.raw += chunk
                        self._progress.notify_all()
        except BaseException as exc:  # reported to the test thread
            self.failure = exc
        with self._progress:
            self.ended_at = time.monotonic()
            self._progress.notify_all()

    def seen(self, messages: int, timeout: float = 10) -> None:
        with self._progress:
            assert self._progress.wait_for(
                lambda: self.raw.count(b"event: message") >= messages or self.ended_at, timeout
            )

    def ended(self, timeout: float) -> list[Event]:
        with self._progress:
            assert self._progress.wait_for(lambda: self.ended_at is not None, timeout), "hangs"
        assert self.failure is None, self.failure
        return parse_sse(self.raw)[0]


def health(server: ServerProcess) -> httpx.Response:
    return httpx.get(server.url + "/health", timeout=5)


def wait_healthy(server: ServerProcess, timeout: float = 10) -> float:
    started = time.monotonic()
    while health(server).status_code != 200:
        assert time.monotonic() - started < timeout, health(server).json()
        time.sleep(0.1)
    return time.monotonic() - started


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"].isdigit()
    error = response.json()["error"]
    assert error["code"] == "store_unavailable"
    assert "Traceback" not in response.text


def test_redis_restarted_mid_run(
    redis_server: RedisServer, start_server: Callable[..., ServerProcess]
) -> None:
    redis_server.start()
    env = {
        "STORE_URL": redis_server.url + "?prefix=restart",
        "TOKEN_DELAY": "0.02",
        "DISCONNECT_GRACE_SECONDS": "10",
    }
    a, b = start_server(**env), start_server(**env)
    assert health(a).json()["store"]["status"] == "ok"
    earlier = post_chat(a.url, data={"message": "hello"})
    cid = earlier.events[0].data["conversation_id"]

    # A reply in flight on A, followed from Redis by a reader on B.
    talker = Listener("POST", a.url + "/chat", {"data": {"message": "Tell me a story"}}).start()
    talker.seen(2)
    story = parse_sse(talker.raw[: talker.raw.index(b"\n\n") + 2])[0][0].data
    follower = Listener("GET", f"{b.url}/conversations/{story['conversation_id']}/stream").start()
    follower.seen(3)
    redis_server.stop()
    died_at = time.monotonic()

    # Both streams end cleanly, within bounds. B's reader loses its source at once: a
    # retryable error without an id, so an EventSource would resume where it was.
    followed = follower.ended(timeout=8)
    assert follower.ended_at is not None
    assert follower.ended_at - died_at < 3
    assert followed[-1].event == "error"
    last_frame = follower.raw.strip().rsplit(b"\n\n", 1)[-1]
    assert last_frame.startswith(b"event: error\n")
    assert b"\nid:" not in last_frame  # Last-Event-ID stays at the last real event
    assert followed[-1].data["error"]["code"] == "store_unavailable"
    assert followed[-1].data["error"]["retryable"] is True
    assert all(e.event in ("connected", "message") for e in followed[:-1])
    # A generates on from memory; the reply cannot be stored, so no `completed` (it would
    # promise history that isn't there): it ends with the store's error instead.
    told = talker.ended(timeout=10)
    assert told[-1].event == "error"
    assert told[-1].data["error"]["code"] == "store_unavailable"
    assert told[-1].data["error"]["retryable"] is True
    ids = [e.id for e in told]
    assert len(ids) == len(set(ids))

    # While Redis is down: /health says so, requests get clear JSON 503s, quickly.
    for server in (a, b):
        down = health(server)
        assert down.status_code == 503
        assert down.json()["status"] == "degraded"
        assert down.json()["store"]["status"] == "unavailable"
        started = time.monotonic()
        assert_store_unavailable(httpx.post(server.url + "/chat", data={"message": "hi"}))
        assert_store_unavailable(httpx.get(f"{server.url}/conversations/{cid}/history"))
        assert_store_unavailable(
            httpx.post(server.url + "/chat", data={"message": "hi", "conversation_id": cid})
        )
        assert time.monotonic() - started < 3

    # Redis is back (empty: no persistence here); both recover without a restart.
    redis_server.start()
    for server in (a, b):
        assert wait_healthy(server) < 5
    fresh = post_chat(b.url, data={"message": "My name is Grace"})
    assert fresh.status == 200
    assert_exact_reply(fresh.events)
    fresh_cid = fresh.events[0].data["conversation_id"]
    again = post_chat(a.url, data={"message": "What is my name?", "conversation_id": fresh_cid})
    assert "Grace" in again.last.data["content"]
    lost = httpx.get(f"{a.url}/conversations/{cid}/history")
    assert lost.status_code == 404  # what lived only in the Redis that died is gone
    assert a.proc is not None
    assert a.proc.poll() is None


def test_an_instance_started_while_redis_is_down_serves_once_it_is_up(
    redis_server: RedisServer, start_server: Callable[..., ServerProcess]
) -> None:
    """A worker boots degraded rather than refusing to start, and recovers by itself."""
    server = start_server(STORE_URL=redis_server.url)  # nothing listens there yet
    down = health(server)
    assert down.status_code == 503
    assert down.json()["status"] == "degraded"
    assert "not open" in down.json()["store"]["error"]
    assert_store_unavailable(httpx.post(server.url + "/chat", data={"message": "hi"}))
    redis_server.start()
    assert wait_healthy(server) < 5
    stream = post_chat(server.url, data={"message": "hello"})
    assert_exact_reply(stream.events)
    assert "store_unavailable_at_start" in server.log()
