"""Live servers for the tests: real processes on real ports, real SQLite files.

`ServerProcess` starts `uvicorn` (or `gunicorn`) exactly as production would,
with the environment as its only configuration, and waits for `/health`.
`read_events` parses an SSE response the way a client must (comments, ids,
multi-line data), so tests assert on the wire format, not on internals.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chatbot_sse.loadtest.withserver import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_until(sock: socket.socket, marker: bytes, count: int) -> bytes:
    """Raw bytes from `sock` until `marker` came `count` times (a client that then leaves)."""
    buffer = b""
    while buffer.count(marker) < count:
        data = sock.recv(65536)
        assert data, "server closed the stream early"
        buffer += data
    return buffer


# uvicorn's HTTP protocol per kind of server: its `auto` choice (httptools), or its fallback.
PROTOCOLS = {"uvicorn": "RequestDeadlineProtocol", "h11": "H11DeadlineProtocol"}


@dataclass
class ServerProcess:
    """A server in its own process; `url` is where it listens."""

    env: dict[str, str]
    kind: str = "uvicorn"
    cwd: Path = ROOT
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "gunicorn":
            return [
                str(BIN / "gunicorn"),
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "chatbot_sse.main:app",
            ]
        if self.kind == "serve":  # `make run`: the CLI, with the settings' own timeouts
            return [str(BIN / "chatbot-sse"), "serve"]
        return [
            str(BIN / "python"), "-m", "uvicorn", "chatbot_sse.main:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--timeout-graceful-shutdown", "5",
            "--http", f"chatbot_sse.request_deadline:{PROTOCOLS.get(self.kind, PROTOCOLS['uvicorn'])}",
        ]  # fmt: skip

    def start(self, timeout: float = 30) -> ServerProcess:
        # DRAIN_SECONDS 2 unless a test says otherwise: a server stopped with replies still
        # running (nobody reading them) gives them until the handoff (20 s by default).
        base = {"HOST": "127.0.0.1", "PORT": str(self.port), "DRAIN_SECONDS": "2"}
        env = {**os.environ, **base, **self.env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        assert self.log_path is not None
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code in (200, 503):
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@dataclass
class Event:
    event: str
    id: str | None
    data: Any
    raw_data: str


@dataclass
class Stream:
    status: int
    headers: httpx.Headers
    events: list[Event]
    comments: list[str]
    retry: int | None
    raw: bytes

    def of(self, name: str) -> list[Event]:
        return [e for e in self.events if e.event == name]

    @property
    def last(self) -> Event:
        return self.events[-1]


def parse_sse(raw: bytes) -> tuple[list[Event], list[str], int | None]:
    """A spec-following SSE parser (WHATWG HTML, 'event stream interpretation')."""
    events: list[Event] = []
    comments: list[str] = []
    retry = None
    name, data, last_id = "", [], None
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n"):
        if line == "":
            if data:
                joined = "\n".join(data)
                events.append(Event(name or "message", last_id, json.loads(joined), joined))
            name, data = "", []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            last_id = value
        elif key == "retry" and value.isdigit():
            retry = int(value)
    return events, comments, retry


def post_chat(base_url: str, timeout: float = 30, **kwargs: Any) -> Stream:
    """POST /chat and read the whole stream (the server ends every reply)."""
    with httpx.stream("POST", base_url + "/chat", timeout=timeout, **kwargs) as response:
        raw = response.read()
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return Stream(response.status_code, response.headers, [], [], None, raw)
    events, comments, retry = parse_sse(raw)
    return Stream(response.status_code, response.headers, events, comments, retry, raw)
