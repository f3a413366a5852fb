"""The measurements, one function each, every one against a running `Server`.

- `verify`: a few sequential replies, fully checked (event sequence, JSON, content).
- `wrk_load`: replies/s with wrk (`-t1 -c50`, POST form body), optionally with a
  light probe of fresh connections running alongside, which measures time to
  `connected` and to the first `message` under that load (wrk cannot see them).
- `python_load`: the same closed loop driven by `bench.client` instead of wrk.
- `loadtest_load`: the same driven by the project's own `chatbot-sse loadtest`.
- `paced`: N concurrent replies paced at 20 events/s; lateness and peak memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client import Reply, closed_loop, fetch, request_bytes
from bench.servers import ROOT, Server

HOST = "127.0.0.1"
WRK_SCRIPT = ROOT / "bench" / "wrk" / "chat.lua"
MESSAGE_CHUNKS = 20  # the simulated reply to the benchmark message
MESSAGE = "nice"


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def latency(values: list[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def _summary(replies: list[Reply]) -> dict[str, Any]:
    ok = [r for r in replies if r.complete]
    errors: dict[str, int] = {}
    for r in replies:
        if not r.complete:
            key = (r.error or f"status {r.status}" if r.status != 200 else "incomplete")[:80]
            errors[key] = errors.get(key, 0) + 1
    return {
        "requests": len(replies),
        "complete": len(ok),
        "incomplete": len(replies) - len(ok),
        "errors": errors,
        "events_per_reply": sorted({r.events for r in ok}),
        "connected_s": latency([r.connected for r in ok if r.connected is not None]),
        "ttft_s": latency([r.first_message for r in ok if r.first_message is not None]),
        "e2e_s": latency([r.end for r in ok if r.end is not None]),
    }


async def verify(server: Server, count: int = 3, timeout_s: float = 10.0) -> dict[str, Any]:
    """`count` sequential replies on fresh connections, each fully checked."""
    request = request_bytes(HOST, server.port, MESSAGE, close=True)
    problems, events = [], []
    for _ in range(count):
        reply, _ = await fetch(HOST, server.port, request, timeout_s)
        problem = reply.check()
        if problem:
            problems.append(problem)
        else:
            events.append(reply.events)
    return {"checked": count, "problems": problems, "events_per_reply": sorted(set(events))}


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(\w+),")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> dict[str, Any]:
    rps = _WRK_RPS.search(output)
    total = _WRK_TOTAL.search(output)
    non2xx = _WRK_NON2XX.search(output)
    sock = _WRK_SOCKET.search(output)
    return {
        "replies_per_s": float(rps.group(1)) if rps else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
    }


async def wrk_load(
    server: Server, duration: float, connections: int = 50, probe_concurrency: int = 0
) -> dict[str, Any]:
    """wrk for `duration` s (whole seconds: wrk takes no fractions); with a probe,
    fresh-connection replies timed alongside."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    proc = await asyncio.create_subprocess_exec(
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), f"http://{HOST}:{server.port}/chat",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    cpu_before, started = server.cpu_seconds(), time.monotonic()
    probe: dict[str, Any] | None = None
    if probe_concurrency:
        warmup = min(1.0, duration * 0.2)
        await asyncio.sleep(warmup)
        replies, _ = await closed_loop(
            HOST, server.port, MESSAGE, probe_concurrency, duration - 2 * warmup, keep_alive=False
        )
        probe = _summary(replies)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    result = parse_wrk(text)
    # Cores the server kept busy: well under 1 per process means it waited (on disk, locks).
    result["server_cpu_cores"] = (server.cpu_seconds() - cpu_before) / (time.monotonic() - started)
    result["raw"] = text
    if probe is not None:
        result["probe"] = probe
    return result


async def python_load(server: Server, duration: float, concurrency: int = 50) -> dict[str, Any]:
    """The wrk load, driven by `bench.client` (keep-alive, closed loop)."""
    cpu = time.process_time()
    replies, elapsed = await closed_loop(HOST, server.port, MESSAGE, concurrency, duration)
    cpu = time.process_time() - cpu
    summary = _summary(replies)
    summary["replies_per_s"] = summary["complete"] / elapsed
    summary["client_cpu"] = cpu / elapsed  # near 1.0: the client, not the server, was the limit
    return summary


def loadtest_available() -> bool:
    try:
        import chatbot_sse.loadtest  # noqa: F401
    except ImportError:
        return False
    return True


async def loadtest_load(server: Server, duration: float, concurrency: int = 50) -> dict[str, Any]:
    """The wrk load, driven by `chatbot-sse loadtest` (its own client and checks)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "loadtest.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatbot_sse.loadtest", f"http://{HOST}:{server.port}",
            "-c", str(concurrency), "--duration", f"{duration:g}", "-m", MESSAGE,
            "--json", str(out), "--quiet", "--failure-budget", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        text, _ = await proc.communicate()
        if not out.exists():
            raise RuntimeError(f"loadtest wrote no results: {text.decode(errors='replace')}")
        summary = json.loads(out.read_text())["summary"]
    return {
        "replies_per_s": summary.get("streams_per_s", 0.0),
        "requests": summary.get("requests_total", 0),
        "complete": summary.get("requests_completed", 0),
        "incomplete": summary.get("requests_failed", 0),
        "errors": {**summary.get("failures_by_kind", {}), **summary.get("protocol_violations", {})},
        "connected_s": summary.get("connected_s", {}),
        "ttft_s": summary.get("ttft_s", {}),
        # keep-alive, as wrk and the Python driver: 50 opened, the rest reused
        "connections_opened": summary.get("connections_opened"),
        "connections_reused": summary.get("connections_reused"),
        "client_cpu": summary.get("client_cpu_cores"),  # near 1.0: the client was the limit
    }


def phases(replies: list[Reply], ideal: float) -> dict[str, dict[str, float | None]]:
    """Where paced replies' lateness comes from, per reply: `start`, connecting to the first
    `message`; `drift`, first to last `message` beyond the ideal (the sleeps pushed back by a
    busy loop); `end`, the last `message` to the body's end (for chatbot-sse, the reply's
    durable commit). The three add up to the lateness."""
    timed = [
        (r.first_message, r.last_message, r.end)
        for r in replies
        if r.first_message is not None and r.last_message is not None and r.end is not None
    ]
    return {
        "start": latency([first for first, _, _ in timed]),
        "drift": latency([last - first - ideal for first, last, _ in timed]),
        "end": latency([end - last for _, last, end in timed]),
    }


async def paced(
    server: Server, count: int, pace: float, timeout_s: float = 120.0
) -> dict[str, Any]:
    """`count` replies started at once on fresh connections, paced at `pace` s per chunk.

    Lateness is each reply's duration (from connecting to the end of the
    `completed` event) minus the ideal: `(chunks - 1) * pace`, the sleeps the
    engine makes between chunks. Memory is the server's peak resident set
    during the run (all its processes).
    """
    request = request_bytes(HOST, server.port, MESSAGE, close=True)
    ideal = (MESSAGE_CHUNKS - 1) * pace
    server.reset_peak()
    baseline = server.rss_peak
    started = time.monotonic()
    results = await asyncio.gather(
        *(fetch(HOST, server.port, request, timeout_s) for _ in range(count))
    )
    elapsed = time.monotonic() - started
    replies = [reply for reply, _ in results]
    problems: dict[str, int] = {}
    for reply in replies:
        problem = reply.check()
        if problem:
            problems[problem[:80]] = problems.get(problem[:80], 0) + 1
    ok = [r for r in replies if r.complete and r.end is not None]
    lateness = [r.end - ideal for r in ok if r.end is not None]
    await asyncio.sleep(0.25)  # one more memory sample after the last reply
    return {
        "streams": count,
        "complete": len(ok),
        "problems": problems,
        "ideal_s": ideal,
        "elapsed_s": elapsed,
        "lateness_s": latency(lateness),
        "connected_s": latency([r.connected for r in ok if r.connected is not None]),
        "phases_s": phases(ok, ideal),
        "rss_baseline_mb": baseline / 2**20,
        "rss_peak_mb": server.rss_peak / 2**20,
    }
