"""Aggregates of a run: the JSON other tools read, and the table people read.

Percentiles use linear interpolation between closest ranks (numpy's default,
`rank = p/100 * (n - 1)`), so anyone can recompute them from the per-stream
records and get the same numbers. Latencies are aggregated over completed
streams only: a failed stream has no e2e, and its partial timings would flatter
the server. ITL is pooled over every gap of every completed stream, as
LLM-serving benchmarks do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from chatbot_sse.loadtest.client import PROTOCOL, StreamRecord
from chatbot_sse.loadtest.runner import RunResult

__all__ = [
    "client_bound_warning",
    "percentile",
    "stats",
    "summarize",
    "summary_table",
    "to_json",
    "write_records",
]

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    rank = p / 100 * (len(sorted_values) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def stats(values: list[float]) -> dict[str, float | None]:
    """`{mean, p50, p90, p95, p99, max}`; all None when there are no values."""
    if not values:
        return {k: None for k in ("mean", "p50", "p90", "p95", "p99", "max")}
    ordered = sorted(values)
    out: dict[str, float | None] = {"mean": math.fsum(ordered) / len(ordered)}
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(ordered, p)
    out["max"] = ordered[-1]
    return out


def summarize(result: RunResult) -> dict[str, Any]:
    """The `summary` object of the results file."""
    records = result.records
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    kinds = Counter(r.kind or "unknown" for r in failed)
    reasons = Counter(r.reason or "unknown" for r in failed if r.kind == PROTOCOL)
    elapsed = result.elapsed_s or math.nan
    chunks = sum(r.chunks for r in records)
    return {
        "requests_total": len(records),
        "requests_completed": len(ok),
        "requests_failed": len(failed),
        "failures_by_kind": dict(sorted(kinds.items())),
        "protocol_violations": dict(sorted(reasons.items())),
        "content_mismatches": reasons.get("content_mismatch", 0),
        "drops": sum(r.drops for r in records),
        "resumes": sum(r.resumes for r in records),
        "resumed_ok": sum(1 for r in ok if r.resumes),
        "conversations_checked": result.conversations_checked,
        "conversations_mismatched": result.conversations_mismatched,
        "elapsed_s": result.elapsed_s,
        "streams_per_s": len(ok) / elapsed,
        "chunks_per_s": chunks / elapsed,
        "chunks_total": chunks,
        "bytes_total": sum(r.bytes for r in records),
        "pings_total": sum(r.pings for r in records),
        # Cores this client kept busy: near 1, it (one Python process) was the limit, not the server.
        "client_cpu_cores": result.client_cpu_s / elapsed,
        "connections_opened": result.connections_opened,
        "connections_reused": result.connections_reused,
        "connect_s": stats([r.connect_s for r in ok if r.connect_s is not None]),
        "connected_s": stats([r.connected_s for r in ok if r.connected_s is not None]),
        "ttft_s": stats([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_s": stats([gap for r in ok for gap in r.itl_s]),
        "e2e_s": stats([r.e2e_s for r in ok if r.e2e_s is not None]),
        "chunks_per_stream": stats([float(r.chunks) for r in ok]),
    }


def timeseries(result: RunResult) -> list[dict[str, Any]]:
    """One row per second: streams started/completed/failed, chunks, and latencies of
    the streams that completed in that second."""
    tl = result.timeline
    by_second: dict[int, list[StreamRecord]] = {}
    for r in result.records:
        if r.ok and r.e2e_s is not None:
            by_second.setdefault(int(r.started_s + r.e2e_s), []).append(r)
    n = max(
        len(tl.chunk_counts), len(tl.started_counts), len(tl.completed), len(tl.failed),
        max(by_second, default=-1) + 1,
    )  # fmt: skip

    def at(series: list[int], i: int) -> int:
        return series[i] if i < len(series) else 0

    rows = []
    for i in range(n):
        done = by_second.get(i, [])
        ttft = stats([r.ttft_s for r in done if r.ttft_s is not None])
        e2e = stats([r.e2e_s for r in done if r.e2e_s is not None])
        rows.append(
            {
                "t": i,
                "started": at(tl.started_counts, i),
                "completed": at(tl.completed, i),
                "failed": at(tl.failed, i),
                "chunks": at(tl.chunk_counts, i),
                "ttft_p50_s": ttft["p50"],
                "ttft_p95_s": ttft["p95"],
                "e2e_p50_s": e2e["p50"],
                "e2e_p95_s": e2e["p95"],
            }
        )
    return rows


def to_json(result: RunResult, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool": "chatbot-sse loadtest",
        "config": result.config.to_json(),
        "summary": summary,
        "timeseries": timeseries(result),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def write_records(path: Path, records: list[StreamRecord]) -> None:
    """Per-stream records as JSON lines, in the order the streams started."""
    with path.open("wb") as out:
        for r in sorted(records, key=lambda r: r.index):
            out.write(orjson.dumps(asdict(r)) + b"\n")


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 1000:,.1f}"


CLIENT_BOUND_CORES = 0.9


def client_bound_warning(summary: dict[str, Any]) -> str | None:
    """A warning when this client, not the server, may have set the pace."""
    cores = summary.get("client_cpu_cores")
    if cores is None or math.isnan(cores) or cores < CLIENT_BOUND_CORES:
        return None
    if not summary.get("requests_completed"):
        return None  # nothing streamed (no server?): the client's CPU says nothing of a pace
    return (
        f"the load tester kept {cores:.2f} of a core busy: it may be the bottleneck, not the "
        "server; run it on another machine, or several of them, for the server's limit"
    )


def summary_table(summary: dict[str, Any]) -> Table:
    """The human view: counts, throughput, then one latency row per metric."""
    table = Table(title="chatbot-sse load test", show_lines=False)
    table.add_column("metric")
    for col in ("mean", "p50", "p90", "p95", "p99", "max"):
        table.add_column(f"{col} ms", justify="right")
    for key, label in (
        ("connected_s", "time to connected"),
        ("ttft_s", "time to first chunk"),
        ("itl_s", "inter-chunk latency"),
        ("e2e_s", "end to end"),
    ):
        s = summary[key]
        table.add_row(label, *(_ms(s[c]) for c in ("mean", "p50", "p90", "p95", "p99", "max")))
    failures = ", ".join(f"{k}={v}" for k, v in summary["failures_by_kind"].items()) or "none"
    table.caption = (
        f"completed {summary['requests_completed']}  failed {summary['requests_failed']} "
        f"({failures})  |  {summary['streams_per_s']:.1f} streams/s  "
        f"{summary['chunks_per_s']:,.0f} chunks/s  |  drops {summary['drops']} "
        f"resumes {summary['resumes']}  mismatches {summary['content_mismatches']}  |  "
        f"{summary['elapsed_s']:.2f} s"
    )
    table.caption += f"  |  client CPU {summary['client_cpu_cores']:.2f} cores"
    if summary.get("connections_opened") is not None:
        table.caption += (
            f"  |  connections opened {summary['connections_opened']} "
            f"reused {summary['connections_reused']}"
        )
    return table
