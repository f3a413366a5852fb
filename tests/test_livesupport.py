"""Servers started on someone's behalf go away with their starter, even when it is killed.

A `finally` or a fixture's teardown stops a server in the ordinary case; these tests kill the
process that started one with SIGKILL, as a CI timeout or `kill -9` would, so none runs. The
starters: the tests' own live servers, `make bench`'s servers, and `withserver` (`make
load-test`, `make demo`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatbot_sse.loadtest.withserver import is_listening

TESTS = Path(__file__).resolve().parent

ROOT = TESTS.parent

# A stand-in for pytest: starts a live server the tests' way, says where, and is killed.
PYTEST = """
import os, pathlib, signal, sys
sys.path.insert(0, sys.argv[1])
from livesupport import ServerProcess
server = ServerProcess({"STORE_URL": f"sqlite:///{sys.argv[2]}/chat.db"})
server.log_path = pathlib.Path(sys.argv[2]) / "server.log"
server.start()
assert server.proc is not None
print(server.proc.pid, server.port, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

# A stand-in for `make bench`: starts our server the benchmark's way and is killed.
BENCH = """
import os, signal, sys
sys.path.insert(0, sys.argv[1] + "/..")
from bench.servers import SPECS, start
spec = next(spec for spec in SPECS if spec.name == "chatbot_sse")
with start(spec):
    import psutil
    me = psutil.Process()
    (server,) = me.children()
    (port,) = {conn.laddr.port for conn in server.net_connections() if conn.status == "LISTEN"}
    print(server.pid, port, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""

# `withserver` starts a server and runs a command; the command says where and kills it.
WITHSERVER = """
import os, signal, subprocess, sys
sys.path.insert(0, sys.argv[1])
from chatbot_sse.loadtest.withserver import main
from livesupport import free_port
port = free_port()
SAY_AND_KILL = (
    "import os, signal, psutil; parent = psutil.Process().parent(); "
    "(server,) = [p for p in parent.children() if p.pid != os.getpid()]; "
    f"print(server.pid, {port}, flush=True); os.kill(parent.pid, signal.SIGKILL)"
)
main(["--url", f"http://127.0.0.1:{port}", "--", sys.executable, "-c", SAY_AND_KILL])
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize(
    "starter", [PYTEST, BENCH, WITHSERVER], ids=["tests", "bench", "withserver"]
)
def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path, starter: str) -> None:
    if starter is not PYTEST:
        pytest.importorskip("psutil")
    parent = subprocess.run(
        [sys.executable, "-c", starter, str(TESTS), str(tmp_path)],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert parent.returncode == -9, parent.stderr.decode()
    pid, port = (int(word) for word in parent.stdout.split())
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):  # leave nothing behind when the helper is broken
        os.kill(pid, 9)
        pytest.fail(f"the server {pid} outlived the process that started it")
    assert not is_listening("127.0.0.1", port)
