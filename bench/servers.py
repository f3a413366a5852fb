"""The servers under test: how each is started, and its memory watched while it runs.

Every server runs in its own process group on a free loopback port, one at a
time (the machine has 2 cores: two servers under load would measure each other).
`Server.rss_peak` is sampled every 100 ms by a thread, summing the process and
all its children (gunicorn's master and workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.instructions import shadowed
from chatbot_sse.loadtest.withserver import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UVICORN = [str(BIN / "python"), "-m", "uvicorn",
           "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1"]  # fmt: skip
STACKS: dict[str, tuple[str, str, str]] = {
    # name: (event loop, HTTP protocol of the peers, chatbot-sse's: the same with the deadline)
    "uvloop": ("uvloop", "httptools", "chatbot_sse.request_deadline:RequestDeadlineProtocol"),
    "asyncio": ("asyncio", "h11", "chatbot_sse.request_deadline:H11DeadlineProtocol"),
}
"""`uvloop` is how chatbot-sse runs by default (`chatbot-sse serve`, the gunicorn worker:
uvicorn's `auto` picks uvloop and httptools when installed). `asyncio` is plain uvicorn
without its `[standard]` extras: the stack issue 8's own numbers match, and its targets are
judged on (see docs/bench.md)."""
JUDGED_STACK = "asyncio"
GUNICORN_WORKERS = {"uvloop": "chatbot_sse.workers.UvicornWorker",
                    "asyncio": "chatbot_sse.workers.UvicornH11Worker"}  # fmt: skip
"""The gunicorn row's worker class on each stack (`-k` overrides gunicorn.conf.py's)."""


NATIVE_SITE = ROOT / "build" / "native" / "site"
"""The compiled build (`make native`), which the `compiled` row runs ahead of the install."""


@dataclass(frozen=True)
class Spec:
    """One contestant: a name, a command line and how pacing is switched on."""

    name: str
    label: str
    ours: bool  # chatbot-sse itself (store, metrics and logging on)
    gunicorn: bool = False
    store: str = "sqlite"  # chatbot-sse's STORE_URL scheme: sqlite (the default) or memory
    extra: bool = False  # diagnostic only: in full runs, not in --quick
    compiled: bool = False  # chatbot-sse's compiled build (mypyc), not the installed package

    def command(self, port: int, stack: str = "uvloop") -> list[str]:
        loop, http, ours_http = STACKS[stack]
        if self.gunicorn:
            return [
                str(BIN / "gunicorn"),
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "-k",
                GUNICORN_WORKERS[stack],
                "chatbot_sse.main:app",
            ]
        base = [*UVICORN, "--loop", loop, "--port", str(port)]
        if self.ours:  # as `chatbot-sse serve` runs it: with the request deadline
            return [*base, "--http", ours_http, "chatbot_sse.main:app"]
        return [*base, "--http", http, f"bench.peers.{self.name}:app"]

    def env(self, port: int, pace: float, workdir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(HOST="127.0.0.1", PORT=str(port), PYTHONPATH=str(ROOT))
        if self.compiled:
            if not NATIVE_SITE.is_dir():
                raise RuntimeError(f"no compiled build in {NATIVE_SITE}: run `make native`")
            env["PYTHONPATH"] = f"{NATIVE_SITE}{os.pathsep}{ROOT}"  # ahead of the editable install
        if self.ours:
            env.update(
                STORE_URL=(
                    f"sqlite:///{workdir / 'chatbot.db'}" if self.store == "sqlite" else "memory://"
                ),
                RESPONSE_DELAY="0",
                TOKEN_DELAY=str(pace),
                LOG_LEVEL="WARNING",
                WORKERS="2",
            )
        else:
            env["BENCH_PACE"] = str(pace)
        return env


SPECS: tuple[Spec, ...] = (
    Spec("bare_asgi", "bare ASGI (floor)", ours=False),
    Spec("sse_starlette_app", "FastAPI + sse-starlette", ours=False),
    Spec("fastapi_native", "FastAPI native SSE", ours=False),
    Spec("chatbot_sse", "chatbot-sse (uvicorn, 1 worker)", ours=True),
    Spec("chatbot_sse_gunicorn", "chatbot-sse (gunicorn, 2 workers)", ours=True, gunicorn=True),
    Spec(
        "chatbot_sse_memory",
        "chatbot-sse, memory store (diagnostic)",
        ours=True,
        store="memory",
        extra=True,
    ),
    Spec(
        "chatbot_sse_compiled",
        "chatbot-sse, compiled build (diagnostic)",
        ours=True,
        extra=True,
        compiled=True,
    ),
)
FLOOR = SPECS[0].name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


@dataclass
class Server:
    """A running server; use as a context manager from `start()`."""

    spec: Spec
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    rss_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def pids(self) -> list[int]:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(self.proc.pid)
            return [p.pid, *(c.pid for c in p.children(recursive=True))]
        return [self.proc.pid]

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (gunicorn's workers, else the server itself)."""
        pids = self.pids()
        return pids[1:] if self.spec.gunicorn and len(pids) > 1 else pids[:1]

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's processes."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        return tree_rss(psutil.Process(self.proc.pid))

    def reset_peak(self) -> None:
        self.rss_peak = self.rss()

    def _sample(self) -> None:
        proc = psutil.Process(self.proc.pid)
        while not self._stop.wait(0.1):
            self.rss_peak = max(self.rss_peak, tree_rss(proc))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _wait_ready(server: Server, timeout: float) -> None:
    """Ready = accepts TCP connections (for gunicorn: once every worker has booted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.spec.name} exited early:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                if not server.spec.gunicorn or len(server.pids()) >= 3:
                    time.sleep(0.3 if not server.spec.gunicorn else 1.0)
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.spec.name} not ready after {timeout}s:\n{server.log()}")


@contextlib.contextmanager
def start(
    spec: Spec,
    pace: float = 0.0,
    timeout: float = 30.0,
    stack: str = "uvloop",
    source: Path | None = None,
) -> Iterator[Server]:
    """Start `spec` on `stack`, wait until it accepts connections, sample its memory, stop it
    after. `source`: another checkout whose package runs instead of the installed one."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        log_path = workdir / "server.log"
        env = spec.env(port, pace, workdir)
        env["PYTHONPATH"] = shadowed(env["PYTHONPATH"], source)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
                spec.command(port, stack),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        server = Server(spec, port, proc, log_path)
        try:
            _wait_ready(server, timeout)
            server.reset_peak()
            server._sampler = threading.Thread(target=server._sample, daemon=True)
            server._sampler.start()
            yield server
        finally:
            server._stop.set()
            _terminate(proc)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
