"""Slow and idle clients are closed within 10 s, by the server itself and through nginx.

uvicorn alone has no header or body timeout; the server's own protocol
(`chatbot_sse.request_deadline`) gives every request REQUEST_READ_TIMEOUT to
arrive whole. These tests hold slowloris sockets open (nothing sent, headers
or a body trickled a byte every 2 s, an idle keep-alive) against plain uvicorn,
`chatbot-sse serve` (what `make run` starts, with the default timeout) and
gunicorn, and through the shipped nginx (`deploy/nginx.conf`), while normal
chats on the same server still answer promptly, and a stream that lasts longer
than the deadline is not cut.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from livesupport import ServerProcess, post_chat
from scalesupport import Nginx, read_timed

LIMIT = 10.0  # seconds: the bound for closing a slow client
MARGIN = 3.0  # a noisy 2-core machine may be late to notice the close
DRIP = 2.0  # seconds between two trickled bytes


@dataclass
class Closed:
    """How a held socket ended: seconds until the peer closed it, and what it answered."""

    after: float
    answer: bytes

    @property
    def status(self) -> int | None:
        if not self.answer.startswith(b"HTTP/1.1 "):
            return None
        return int(self.answer.split(b" ", 2)[1])


def hold(port: int, head: bytes, drip: bytes, interval: float) -> Closed:
    """Send `head`, then one byte of `drip` every `interval` s, until the peer closes."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=LIMIT + MARGIN) as sock:
        sock.settimeout(interval)
        try:
            if head:
                sock.sendall(head)
            pending = list(drip)
            while time.monotonic() - started < LIMIT + 2 * MARGIN:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    if pending:
                        sock.sendall(bytes([pending.pop(0)]))
                    continue
                if not data:
                    return Closed(time.monotonic() - started, answer)
                answer += data
        except OSError:  # reset, or a send into a closed socket
            return Closed(time.monotonic() - started, answer)
    return Closed(float("inf"), answer)


BODY = json.dumps({"message": "this body arrives one byte every two seconds"}).encode()
CASES: dict[str, tuple[bytes, bytes]] = {
    "sends nothing": (b"", b""),
    "trickles its headers": (b"P", b"OST /chat HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"x" * 100),
    "trickles its body": (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY),
        BODY,
    ),
    "idles after a request": (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b""),
}


def slow_clients_while_chatting(port: int, url: str) -> dict[str, Closed]:
    """Hold every case open at once; meanwhile three chats must get their first event soon."""
    results: dict[str, Closed] = {}

    def run(name: str, head: bytes, drip: bytes) -> None:
        results[name] = hold(port, head, drip, DRIP)

    threads = [threading.Thread(target=run, args=(n, *c)) for n, c in CASES.items()]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        for _ in range(3):
            timed = read_timed("POST", url + "/chat", data={"message": "hi"}, timeout=10)
            assert timed.status == 200
            assert timed.events[-1].event == "completed"
            assert timed.arrivals[0] - timed.started < 2.0  # not queued behind the slow ones
    finally:
        for thread in threads:
            thread.join(LIMIT + 3 * MARGIN)
    assert set(results) == set(CASES)
    return results


def assert_closed_in_time(results: dict[str, Closed], deadline: float) -> None:
    late = {name: r.after for name, r in results.items() if r.after > LIMIT + MARGIN}
    assert not late, {name: r.after for name, r in results.items()}
    for name in ("sends nothing", "trickles its headers", "trickles its body"):
        closed = results[name]
        # Closed by the deadline, not by something sooner (or by chance).
        assert closed.after > deadline - 1, (name, closed.after)
        assert closed.status == 408, (name, closed.answer[:300])
        body = json.loads(closed.answer.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "request_timeout"


@pytest.mark.parametrize(
    ("kind", "deadline"),
    [("uvicorn", 5.0), ("h11", 5.0), ("serve", 10.0), ("gunicorn", 5.0)],
    ids=["uvicorn", "uvicorn-h11", "chatbot-sse-serve-default", "gunicorn"],
)
def test_the_server_itself_closes_slow_clients_while_chats_answer(
    start_server: Callable[..., ServerProcess], kind: str, deadline: float
) -> None:
    env = {"TOKEN_DELAY": "0.01", "WORKERS": "1"}
    if kind != "serve":  # `chatbot-sse serve` keeps the default (10 s)
        env["REQUEST_READ_TIMEOUT"] = str(deadline)
    server = start_server(kind, **env)
    results = slow_clients_while_chatting(server.port, server.url)
    assert_closed_in_time(results, deadline)


def test_the_deadline_covers_reading_only_not_a_long_stream(
    start_server: Callable[..., ServerProcess],
) -> None:
    """A reply that streams for longer than the deadline, then a second request on the same
    connection (keep-alive), both complete."""
    server = start_server(REQUEST_READ_TIMEOUT="1", TOKEN_DELAY="0.02")  # "slow": 0.2 s a word
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/chat", data={"message": "/simulate slow"}) as response:
            body = response.read()
        assert time.monotonic() - started > 2, "the reply was meant to outlast the deadline"
        assert b"event: completed" in body
        time.sleep(0.5)  # idle, but less than the deadline and uvicorn's keep-alive
        again = client.get("/health")
    assert again.status_code == 200
    assert post_chat(server.url, data={"message": "hi"}).last.event == "completed"


@pytest.fixture
def proxy(start_server: Callable[..., ServerProcess], tmp_path: Path) -> Iterator[Nginx]:
    app = start_server(TOKEN_DELAY="0.01", KEEPALIVE_SECONDS="2", REQUEST_READ_TIMEOUT="5")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    nginx = Nginx(workdir, [f"127.0.0.1:{app.port}"])
    try:
        yield nginx.start()
    finally:
        nginx.stop()


def test_slow_clients_are_closed_through_nginx_while_chats_answer(proxy: Nginx) -> None:
    """nginx closes what it times itself (head, stalls, idle); a trickled body, which never
    stalls for nginx's 5 s, is passed on unbuffered and closed by the app's deadline."""
    results = slow_clients_while_chatting(proxy.port, proxy.url)
    late = {name: r.after for name, r in results.items() if r.after > LIMIT + MARGIN}
    assert not late, {name: r.after for name, r in results.items()}
    trickled = results["trickles its body"]
    assert trickled.status == 408, trickled.answer[:300]
