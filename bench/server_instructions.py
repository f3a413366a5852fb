"""Instructions per reply of a whole server process, HTTP and sockets included, under callgrind.

    .venv/bin/python -m bench.server_instructions                       # chatbot-sse, SQLite
    .venv/bin/python -m bench.server_instructions --server bare_asgi    # the floor
    .venv/bin/python -m bench.server_instructions --concurrency 20 --base /tmp/base

`bench.instructions` counts the app driven in process; this counts what a real server spends:
uvicorn's HTTP parsing and event loop, the ASGI app, the store's thread, with replies fetched
over real loopback sockets (keep-alive, `--concurrency` users each asking for its next reply
when the last one ended). The server runs under valgrind's callgrind twice, serving `--small`
and `--large` replies, and the difference is divided by the difference in replies: start-up,
imports and shutdown cancel out. System calls and the kernel's work are not instructions of the
process, so a change that writes less (fewer pages, fewer `write`s) shows in CPU time, not
here. With `--concurrency 1` every SQLite write commits alone (no group commit to share it); at
20 or more the batches form as under load. `--base DIR` measures a checkout of another commit
too (`git worktree add --detach /tmp/base HEAD`): its `src` goes first on the server's path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.client import fetch, request_bytes
from bench.instructions import CALLGRIND, collected, per_reply, shadowed
from bench.servers import ROOT, SPECS, STACKS, Spec, free_port

HOST = "127.0.0.1"
MESSAGE = "nice"
READY_SECONDS = 240.0  # a server under callgrind imports ~50x slower


def _wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{proc.communicate()[1][-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not listen within {READY_SECONDS} s")


async def _drive(port: int, replies: int, concurrency: int) -> None:
    """`replies` checked replies from `concurrency` keep-alive users, each in turn."""
    request = request_bytes(HOST, port, MESSAGE)
    share = [replies // concurrency + (i < replies % concurrency) for i in range(concurrency)]

    async def user(count: int) -> None:
        conn = None
        for _ in range(count):
            reply, conn = await fetch(HOST, port, request, 120.0, conn)
            problem = reply.check()
            if problem:
                raise RuntimeError(f"a reply went wrong under callgrind: {problem}")
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(user(count) for count in share if count))


def _count(spec: Spec, stack: str, replies: int, concurrency: int, source: Path | None) -> int:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        env = spec.env(port, 0.0, Path(tmp))
        env["PYTHONPATH"] = shadowed(env["PYTHONPATH"], source)
        proc = subprocess.Popen(  # noqa: S603 - valgrind and our own interpreter
            [*CALLGRIND, *spec.command(port, stack)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _wait_ready(proc, port)
            asyncio.run(_drive(port, replies, concurrency))
            proc.send_signal(signal.SIGINT)  # a graceful stop: callgrind reports at exit
            _, err = proc.communicate(timeout=READY_SECONDS)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return collected(err)


def measure(
    spec: Spec, stack: str, small: int, large: int, concurrency: int, source: Path | None = None
) -> float:
    """Instructions per reply of `spec`'s server (the two runs side by side)."""
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_count, spec, stack, n, concurrency, source) for n in (small, large)]
        counts = [run.result() for run in runs]
    return per_reply((small, counts[0]), (large, counts[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [spec.name for spec in SPECS if not spec.gunicorn]
    parser.add_argument("--server", choices=names, default="chatbot_sse")
    parser.add_argument("--stack", choices=sorted(STACKS), default="uvloop")
    parser.add_argument("--small", type=int, default=100, help="replies of the first run")
    parser.add_argument("--large", type=int, default=400, help="replies of the second run")
    parser.add_argument("--concurrency", type=int, default=1, help="keep-alive users at once")
    parser.add_argument("--base", type=Path, help="also measure this checkout's package")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.exit(2, "needs valgrind: apt-get install valgrind\n")
    if not 0 < args.small < args.large or args.concurrency < 1:
        parser.error("needs 0 < --small < --large and --concurrency >= 1")
    spec = next(spec for spec in SPECS if spec.name == args.server)
    sizes = (args.small, args.large, args.concurrency)
    ours = measure(spec, args.stack, *sizes)
    label = re.sub(r"\s+", " ", spec.label)
    print(f"{label}, this checkout: {ours:,.0f} instructions per reply")
    if args.base is not None:
        base = measure(spec, args.stack, *sizes, args.base)
        print(f"{label}, {args.base}: {base:,.0f} per reply; this / base = {ours / base:.3f}")


if __name__ == "__main__":
    main()
