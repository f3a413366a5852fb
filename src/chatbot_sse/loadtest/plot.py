"""The PNG plot of a run: latency percentiles and throughput over time.

matplotlib is imported here, lazily, with the Agg backend: no display is
needed, and runs that do not ask for a plot do not pay its import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plot"]


def write_plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Two panels sharing the time axis: latencies (ms) above, throughput below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["t"] for row in rows]

    def series(key: str) -> list[float]:
        return [float("nan") if row[key] is None else row[key] * 1000 for row in rows]

    fig, (lat, thr) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    lat.plot(t, series("ttft_p50_s"), label="TTFT p50")
    lat.plot(t, series("ttft_p95_s"), label="TTFT p95")
    lat.plot(t, series("e2e_p50_s"), label="e2e p50")
    lat.plot(t, series("e2e_p95_s"), label="e2e p95")
    lat.set_ylabel("latency (ms)")
    lat.legend(loc="upper left")
    lat.grid(alpha=0.3)
    lat.set_title(title)

    thr.bar(t, [row["completed"] for row in rows], label="streams completed/s", alpha=0.6)
    thr.bar(t, [row["failed"] for row in rows], label="streams failed/s", color="red")
    thr.set_ylabel("streams/s")
    thr.set_xlabel("seconds since start")
    chunks = thr.twinx()
    chunks.plot(t, [row["chunks"] for row in rows], color="green", label="chunks/s")
    chunks.set_ylabel("chunks/s")
    handles, labels = thr.get_legend_handles_labels()
    h2, l2 = chunks.get_legend_handles_labels()
    thr.legend(handles + h2, labels + l2, loc="upper left")
    thr.grid(alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
