"""Slow and idle clients through the shipped nginx (`deploy/nginx.conf`): closed within 10 s.

uvicorn (h11/httptools) has no header timeout, so the deployment puts nginx in
front; these tests run that very file (see `scalesupport.Nginx`) in front of a
live uvicorn, hold slowloris sockets open, and check that a normal chat through
the same nginx still answers promptly.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livesupport import ServerProcess
from scalesupport import Nginx, read_timed

LIMIT = 10.0  # seconds: the bound for closing a slow client


def open_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=LIMIT + 5)
    return sock


def closed_after(sock: socket.socket, trickle: list[bytes], interval: float) -> float:
    """Send `trickle` piece by piece every `interval` s; seconds until the peer closed."""
    started = time.monotonic()
    sock.settimeout(interval)
    pieces = list(trickle)
    while time.monotonic() - started < LIMIT + 5:
        if pieces:
            try:
                sock.sendall(pieces.pop(0))
            except OSError:
                return time.monotonic() - started
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return float("inf")


HEADER_DRIP = [b"POST /chat HTTP/1.1\r\n"] + [b"X-Drip-%d: x\r\n" % n for n in range(100)]
STALLED_BODY = [
    b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"message": '
]

CASES = {
    "sends nothing": ([], 1.0),
    "trickles its headers": (HEADER_DRIP, 1.0),
    "stalls in its body": (STALLED_BODY, 1.0),
    "idles after a request": ([b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"], 1.0),
}


@pytest.fixture
def proxy(start_server: Callable[..., ServerProcess], tmp_path: Path) -> Iterator[Nginx]:
    app = start_server(TOKEN_DELAY="0.01", KEEPALIVE_SECONDS="2")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    nginx = Nginx(workdir, [f"127.0.0.1:{app.port}"])
    try:
        yield nginx.start()
    finally:
        nginx.stop()


def test_slow_clients_are_closed_while_chats_answer(proxy: Nginx) -> None:
    times: dict[str, float] = {}

    def hold(name: str, trickle: list[bytes], interval: float) -> None:
        with open_socket(proxy.port) as sock:
            times[name] = closed_after(sock, trickle, interval)

    threads = [threading.Thread(target=hold, args=(name, *case)) for name, case in CASES.items()]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        for _ in range(3):
            timed = read_timed("POST", proxy.url + "/chat", data={"message": "hi"}, timeout=5)
            assert timed.status == 200
            assert timed.events[-1].event == "completed"
            assert timed.arrivals[0] - timed.started < 1.0
    finally:
        for thread in threads:
            thread.join(LIMIT + 10)
    assert set(times) == set(CASES)
    slow = {name: t for name, t in times.items() if t > LIMIT}
    assert not slow, times
