"""Log lines stay whole when several processes share one log, as gunicorn's workers do.

Every worker writes its JSON lines to the same stderr. A line written in two
system calls (the record, then its newline: what `print` does on Python's
unbuffered stderr) can have another worker's line land in between, and a log
shipper then sees two records glued on one line and none on the next.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WRITER = """
import os, sys
import structlog
from chatbot_sse.observability.logging import configure_logging

pids = []
for _ in range(2):  # the workers: forked, then each configures logging, as create_app does
    pid = os.fork()
    if pid == 0:
        configure_logging("INFO", debug=False)
        log = structlog.get_logger("test")
        for n in range(LINES):
            log.info("turn_finished", n=n, content="x" * 200)
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""


def test_workers_sharing_stderr_never_split_a_line(tmp_path: Path) -> None:
    lines_per_worker = 3000
    log_path = tmp_path / "shared.log"
    with log_path.open("wb") as log:
        subprocess.run(
            [sys.executable, "-c", WRITER.replace("LINES", str(lines_per_worker))],
            stderr=log,
            check=True,
            timeout=60,
        )
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # a glued line fails here
    assert len(records) == 2 * lines_per_worker
    by_pid: dict[int, list[int]] = {}
    for record in records:
        by_pid.setdefault(record["pid"], []).append(record["n"])
    assert sorted(len(ns) for ns in by_pid.values()) == [lines_per_worker] * 2
    assert all(ns == list(range(lines_per_worker)) for ns in by_pid.values())


MODULE_LOGGER = """
from chatbot_sse.observability.logging import REQUEST_ID, configure_logging, get_logger

log = get_logger("test")  # as modules make theirs: at import, before logging is configured
configure_logging("INFO", debug=False)
log.debug("filtered_out")
log.info("outside_a_request")
bound = REQUEST_ID.set("req-1")
log.info("inside_a_request", n=1)
log.info("names_its_own", request_id="req-2")
REQUEST_ID.reset(bound)
log.info("after_the_request")
print("KEPT", "info" in vars(log), "debug" in vars(log))
"""


def test_a_module_logger_writes_through_the_configured_pipeline_with_the_request_id() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MODULE_LOGGER], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [r["event"] for r in records] == [
        "outside_a_request",
        "inside_a_request",
        "names_its_own",
        "after_the_request",
    ]
    assert [r.get("request_id") for r in records] == [None, "req-1", "req-2", None]
    assert records[1]["n"] == 1
    assert records[1]["level"] == "info"
    # Configured to cache its loggers, structlog's methods are looked up once and kept.
    assert done.stdout.split() == ["KEPT", "True", "True"]
