"""Where a server's CPU time goes under the wrk load: py-spy samples, folded by function.

`py-spy record --format raw` writes one line per distinct stack (`frame;frame;... count`).
`--threads` puts the thread first, so the event loop and the store's
thread are told apart. `fold()` turns that into self time (the leaf frame: where the CPU actually was)
and inclusive time (any frame on the stack) per function, and self time per
package, which is what a reader needs to decide what to optimise.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure import wrk_load
from bench.servers import BIN, Server

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _package(file: str) -> str:
    """`chatbot_sse/turns.py` -> `chatbot_sse`; `<frozen runpy>` -> `<frozen>`; stdlib by name."""
    if file.startswith("<"):
        return "<frozen>"
    head = file.split("/", 1)[0]
    return head.removesuffix(".py")


def fold(raw: str, top: int = 25) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames[0].startswith("thread ("):  # --threads: "thread (TID): NAME" comes first
            thread = frames.pop(0).partition(": ")[2] or "?"
            threads[thread.rstrip("_0123456789") or thread] += count
        if not frames:
            continue
        names = []
        for frame in frames:
            match = _FRAME.match(frame.strip())
            names.append(f"{match['func']} ({match['file']})" if match else frame.strip())
        self_time[names[-1]] += count
        leaf = _FRAME.match(frames[-1].strip())
        packages[_package(leaf["file"]) if leaf else "?"] += count
        for name in set(names):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": name, "share": count / total} for name, count in counter.most_common(top)]

    return {
        "samples": total,
        "self": share(self_time),
        "inclusive": share(inclusive),
        "packages": share(packages),
        "threads": share(threads),
    }


def _py_spy() -> str:
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not os.path.exists(py_spy):
        raise RuntimeError("py-spy not installed: pip install -e '.[bench]'")
    return py_spy


async def profile(server: Server, duration: float, rate: int = 200) -> dict[str, Any]:
    """py-spy on the server's worker process while wrk loads it for `duration` s."""
    py_spy = _py_spy()
    pid = server.worker_pids()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.txt"
        load = asyncio.create_task(wrk_load(server, duration + 2))
        await asyncio.sleep(1)
        spy = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(pid), "--duration", f"{duration:g}",
            "--rate", str(rate), "--format", "raw", "--nonblocking", "--threads", "-o", str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        log, _ = await spy.communicate()
        wrk = await load
        if not out.exists():
            raise RuntimeError(f"py-spy failed: {log.decode(errors='replace')}")
        folded = fold(out.read_text())
    folded["replies_per_s_while_profiled"] = wrk["replies_per_s"]
    folded["pid"] = pid
    return folded
