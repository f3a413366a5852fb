"""Clients for the scale-out tests: streams read as they arrive, cut, resumed, timed.

Everything goes over real sockets to real processes (instances, nginx), so a
"cut" is a closed TCP connection and an arrival time is when the bytes came.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from livesupport import Event, die_with_parent, free_port, parse_sse

NGINX = Path(os.environ.get("NGINX", "/usr/sbin/nginx"))
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@dataclass
class Partial:
    """What a client got before its connection was cut: complete events only."""

    events: list[Event]
    status: int
    headers: httpx.Headers

    @property
    def last_id(self) -> str:
        last = self.events[-1].id
        assert last is not None
        return last

    @property
    def conversation_id(self) -> str:
        return str(self.events[0].data["conversation_id"])


def complete_part(raw: bytes) -> bytes:
    """The frames of `raw` that ended (a client never dispatches a half-received event)."""
    end = raw.rfind(b"\n\n")
    return raw[: end + 2] if end >= 0 else b""


def read_then_cut(
    method: str, url: str, messages: int, timeout: float = 20, **kwargs: Any
) -> Partial:
    """Open a stream, read until `messages` message events came, then close the connection."""
    raw = b""
    with httpx.stream(method, url, timeout=timeout, **kwargs) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_raw():
            raw += chunk
            if raw.count(b"event: message") >= messages:
                break
    events = parse_sse(complete_part(raw))[0]
    return Partial(events, response.status_code, response.headers)


@dataclass
class Timed:
    """A whole stream with the arrival time (monotonic seconds) of each event."""

    status: int
    headers: httpx.Headers
    events: list[Event]
    arrivals: list[float]
    started: float


def read_timed(method: str, url: str, timeout: float = 30, **kwargs: Any) -> Timed:
    """Read a stream to its end, noting when each complete event arrived."""
    started = time.monotonic()
    events: list[Event] = []
    arrivals: list[float] = []
    pending = b""
    with httpx.stream(method, url, timeout=timeout, **kwargs) as response:
        for chunk in response.iter_raw():
            now = time.monotonic()
            pending += chunk
            done = complete_part(pending)
            if done:
                pending = pending[len(done) :]
                new = parse_sse(done)[0]
                events += new
                arrivals += [now] * len(new)
    return Timed(response.status_code, response.headers, events, arrivals, started)


def assert_exact_reply(events: list[Event]) -> str:
    """A whole reply: ids `<rid>:0..n` in order, nothing twice, the chunks join to `completed`."""
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), f"an event came twice: {ids}"
    reply_id = events[0].data["message_id"]
    assert ids == [f"{reply_id}:{n}" for n in range(len(events))], ids
    assert events[0].event == "connected"
    assert events[-1].event == "completed", events[-1]
    joined = "".join(e.data["content"] for e in events if e.event == "message")
    assert joined == events[-1].data["content"]
    return joined


def history(base_url: str, cid: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base_url}/conversations/{cid}/history", timeout=10)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def wait_for_history(
    base_url: str, cid: str, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        messages = history(base_url, cid)
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def metric(base_url: str, line_prefix: str) -> float:
    """The value of the first /metrics sample starting with `line_prefix` (0 if absent)."""
    for line in httpx.get(base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- nginx ----------------------------------------------------------------------------------


def require_nginx() -> Path:
    """nginx's binary; else skip (fail under CI) saying how to get it."""
    if not NGINX.exists():
        reason = f"{NGINX} is missing: run `make nginx` (apt-get install nginx)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return NGINX


def nginx_site(upstreams: list[str], listen: str) -> str:
    """`deploy/nginx.conf` with the test's instances and port in place of compose's.

    Only the `server host:port` lines of the upstream and the `listen` line are
    replaced: everything else (buffering left at nginx's default, timeouts,
    headers) is what production runs.
    """
    lines: list[str] = []
    replaced_servers = replaced_listen = False
    for line in (DEPLOY / "nginx.conf").read_text().splitlines():
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped.startswith("server ") and stripped.endswith(";") and ":" in stripped:
            if not replaced_servers:
                options = stripped.removesuffix(";").split()[2:]
                lines += [f"{indent}server {u} {' '.join(options)};" for u in upstreams]
                replaced_servers = True
            continue
        if stripped.startswith("listen "):
            lines.append(f"{indent}listen {listen};")
            replaced_listen = True
            continue
        lines.append(line)
    assert replaced_servers, "deploy/nginx.conf: no `server host:port` line in the upstream"
    assert replaced_listen, "deploy/nginx.conf: no `listen` line"
    return "\n".join(lines) + "\n"


class Nginx:
    """A real nginx in the foreground, with every path it writes under `workdir`."""

    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.upstreams = upstreams
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> Path:
        work = self.workdir
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / "temp" / name).mkdir(parents=True, exist_ok=True)
        site = work / "site.conf"
        site.write_text(nginx_site(self.upstreams, f"127.0.0.1:{self.port}"))
        main = work / "nginx.conf"
        main.write_text(
            f"""
worker_processes 1;
error_log {work}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {work}/access.log;
    client_body_temp_path {work}/temp/client_body;
    proxy_temp_path {work}/temp/proxy;
    fastcgi_temp_path {work}/temp/fastcgi;
    uwsgi_temp_path {work}/temp/uwsgi;
    scgi_temp_path {work}/temp/scgi;
    include {site};
}}
"""
        )
        return main

    def start(self, timeout: float = 10) -> Nginx:
        binary = require_nginx()
        conf = self.config()
        directives = f"daemon off; pid {self.workdir}/nginx.pid;"
        check = subprocess.run(
            [binary, "-t", "-q", "-p", str(self.workdir), "-c", str(conf), "-g", directives],
            capture_output=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr.decode()
        with (self.workdir / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.workdir), "-c", str(conf), "-g", directives],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                httpx.get(self.url + "/health", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start: {self.log()}")

    def log(self) -> str:
        parts = [self.workdir / "stderr.log", self.workdir / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def access_log(self) -> list[str]:
        path = self.workdir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown: the test is over
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
