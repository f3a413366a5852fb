"""`bench.inprocess`: the app driven in process, its chunks pushed as our protocols push them."""

from __future__ import annotations

import re

from benchsupport import run_bench

PACED = ("--replies", "40", "--concurrency", "20", "--pace", "0.005", "--loop", "asyncio")


def _run(*args: str) -> tuple[float, float, float]:
    """(CPU us, sends, writes to the socket) per reply of a short paced run, memory store."""
    output = run_bench("inprocess", *PACED, *args, env={"STORE_URL": "memory://"})
    found = re.search(r"(\d+) us CPU/reply, \d+ replies/s, ([\d.]+) sends/reply", output)
    assert found is not None, output
    writes = re.search(r"([\d.]+) writes/reply", output)
    return float(found.group(1)), float(found.group(2)), float(writes.group(1)) if writes else 0.0


def test_paced_chunks_go_through_send_unless_pushed() -> None:
    """Paced, each of the 20 chunks wakes the response's task and is a `send` of its own
    (chunks a late task finds waiting go together, and with the memory store the last goes
    with the end), or, given the protocol's `BodyChunks` (`--pushed`), a write by the flush
    round: `send` then carries only the head and the end (`completed`)."""
    cpu, sends, writes = _run()
    assert cpu > 0
    assert 10 < sends <= 22
    assert writes == 0.0
    cpu, sends, writes = _run("--pushed")
    assert cpu > 0
    assert sends == 2.0
    assert 10 < writes <= 20  # `connected` with the first chunk, then each chunk after it
