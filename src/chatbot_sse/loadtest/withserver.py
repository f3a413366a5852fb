"""Run a command against a chat server, starting one only if none is listening.

`make load-test` and `make demo` use this: against a running server they just
run; on a fresh checkout they start uvicorn with a fast simulated engine and a
throw-away SQLite file, wait for `/health`, run the command, and stop the
server they started (and only that one) whatever the command's outcome.

    python -m chatbot_sse.loadtest.withserver --url http://127.0.0.1:8000 -- CMD ARGS...
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["die_with_parent", "is_listening", "main"]


def die_with_parent() -> None:
    """`preexec_fn` for a server started on someone's behalf: the kernel sends it SIGTERM when
    its starter ends.

    A `finally` stops the server, but it never runs when the starter itself is killed (a CI
    timeout, a second ^C, `kill -9`), and the servers outlived it holding their ports, files
    and CPU. Linux's PR_SET_PDEATHSIG fires when the *thread* that started the child ends:
    start servers from the main thread, never from a helper thread. Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:  # noqa: S310 - our own http URL
            return int(resp.status) == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 503  # up, merely unhealthy: let the command see it
    except OSError:
        return False


def start_server(
    url: str, workdir: Path, response_delay: str, token_delay: str
) -> subprocess.Popen[bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    env = {
        **os.environ,
        "HOST": host,
        "PORT": str(port),
        "STORE_URL": f"sqlite:///{workdir}/chat.db",
        "RESPONSE_DELAY": response_delay,
        "TOKEN_DELAY": token_delay,
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "chatbot_sse.main:app", "--host", host,
           "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "5"]  # fmt: skip
    with (workdir / "server.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(  # noqa: S603 - our own interpreter
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--response-delay", default="0.05")
    parser.add_argument("--token-delay", default="0.01")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for /health")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    url = args.url.rstrip("/")
    parts = urlsplit(url)
    if is_listening(parts.hostname or "127.0.0.1", parts.port or 80):
        return subprocess.call(command)  # noqa: S603 - the caller's own command
    with tempfile.TemporaryDirectory(prefix="chatbot-sse-") as tmp:
        workdir = Path(tmp)
        print(f"no server at {url}: starting one (store in {workdir})", file=sys.stderr)
        proc = start_server(url, workdir, args.response_delay, args.token_delay)
        try:
            deadline = time.monotonic() + args.wait
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.stderr.write((workdir / "server.log").read_text(errors="replace")[-3000:])
                    print(f"the server did not come up at {url}", file=sys.stderr)
                    return 2
                time.sleep(0.1)
            return subprocess.call(command)  # noqa: S603 - the caller's own command
        finally:
            stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
