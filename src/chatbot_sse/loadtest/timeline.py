"""Per-second counters of a run, cheap enough to bump from the hot path.

Chunks are counted when they arrive, not when their stream ends, so the
time series shows the throughput the server actually delivered each second.
"""

from __future__ import annotations

__all__ = ["Timeline"]


class Timeline:
    """Counters bucketed by whole seconds since `t0` (a `time.perf_counter()` value)."""

    __slots__ = ("active", "chunk_counts", "completed", "failed", "started_counts", "t0")

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.active = 0
        self.chunk_counts: list[int] = []
        self.started_counts: list[int] = []
        self.completed: list[int] = []
        self.failed: list[int] = []

    def _bump(self, series: list[int], now: float, n: int) -> None:
        i = int(now - self.t0)
        if i < 0:
            i = 0
        if i >= len(series):
            series.extend([0] * (i + 1 - len(series)))
        series[i] += n

    def chunks(self, now: float, n: int) -> None:
        self._bump(self.chunk_counts, now, n)

    def started(self, now: float) -> None:
        self.active += 1
        self._bump(self.started_counts, now, 1)

    def finished(self, now: float, ok: bool) -> None:
        self.active -= 1
        self._bump(self.completed if ok else self.failed, now, 1)

    @property
    def total_chunks(self) -> int:
        return sum(self.chunk_counts)
