"""The live servers the tests start go away with the test run, even when it is killed.

Teardown stops a server in the ordinary case; these tests kill the process that started one
with SIGKILL, as a CI timeout or `kill -9` of pytest would, so no teardown runs.
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

# A stand-in for pytest: starts a live server the tests' way, says where, and is killed.
PARENT = """
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


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    parent = subprocess.run(
        [sys.executable, "-c", PARENT, str(TESTS), str(tmp_path)],
        capture_output=True,
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
