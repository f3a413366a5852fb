"""Prometheus metrics that stay correct across gunicorn workers.

Under gunicorn, `gunicorn.conf.py` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
directory before any worker imports prometheus-client; every worker then
writes its samples to memory-mapped files there and `/metrics` aggregates all
of them, whichever worker answers. Without it (one uvicorn process, tests) each
app gets its own registry, so several apps can live in one process.

The hot path touches metrics once per stream, not per chunk: chunk counts are
added when a stream ends.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The server's metrics, registered in a registry of their own."""

    def __init__(self, multiprocess_dir: str = "") -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "chatbot_sse_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.active_streams = Gauge(
            "chatbot_sse_active_streams",
            "SSE replies currently streaming.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.streams = Counter(
            "chatbot_sse_streams",
            "SSE replies ended, by outcome (completed, error, disconnected).",
            ["outcome"],
            registry=r,
        )
        self.time_to_first_chunk = Histogram(
            "chatbot_sse_time_to_first_chunk_seconds",
            "From the start of a reply to its first message chunk.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_duration = Histogram(
            "chatbot_sse_stream_duration_seconds",
            "From the start of a reply to its end, whatever the outcome.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.chunks_sent = Counter(
            "chatbot_sse_chunks_sent", "Message chunks produced for clients.", registry=r
        )
        self.errors = Counter(
            "chatbot_sse_errors",
            "Errors reported to clients, by error code.",
            ["code"],
            registry=r,
        )

        self.generations_cancelled = Counter(
            "chatbot_sse_generations_cancelled",
            "Generations stopped before their end, by reason (interrupted, cancelled, shutdown).",
            ["reason"],
            registry=r,
        )
        self.resumes = Counter(
            "chatbot_sse_resumes",
            "Streams resumed with Last-Event-ID, by where the events came from (live, log).",
            ["source"],
            registry=r,
        )
        self.replayed_events = Counter(
            "chatbot_sse_replayed_events", "Events sent again to resuming clients.", registry=r
        )
        self.pings = Counter("chatbot_sse_pings_sent", "Keep-alive comments sent.", registry=r)
        self.client_disconnects = Counter(
            "chatbot_sse_client_disconnects",
            "SSE connections the client closed before the reply ended.",
            registry=r,
        )
        self.send_blocked = Counter(
            "chatbot_sse_send_blocked_seconds",
            "Time spent waiting for slow clients to take stream data.",
            registry=r,
        )
        self.upstream_requests = Counter(
            "chatbot_sse_upstream_requests",
            "Requests to the upstream model server (ENGINE=openai), retries included, "
            "by outcome: ok or the error code.",
            ["outcome"],
            registry=r,
        )
        self.upstream_first_token = Histogram(
            "chatbot_sse_upstream_first_token_seconds",
            "From sending a request upstream to its first content token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.requests_rejected = Counter(
            "chatbot_sse_requests_rejected",
            "Requests refused by access control or a limit, by reason (unauthorized, "
            "rate_limited, too_many_streams, server_busy).",
            ["reason"],
            registry=r,
        )
        self.streams_cut = Counter(
            "chatbot_sse_streams_cut",
            "SSE connections the server closed early, by reason: slow_reader (fell more than "
            "STREAM_BACKLOG_BYTES behind), expired (outlived MAX_STREAM_SECONDS).",
            ["reason"],
            registry=r,
        )

    def rejected(self, reason: str) -> None:
        self.requests_rejected.labels(reason).inc()

    def stream_cut(self, reason: str) -> None:
        self.streams_cut.labels(reason).inc()

    def stream_started(self) -> None:
        self.active_streams.inc()

    def stream_finished(
        self, outcome: str, duration: float, ttft: float | None, chunks: int
    ) -> None:
        self.active_streams.dec()
        self.streams.labels(outcome).inc()
        self.stream_duration.observe(duration)
        if ttft is not None:
            self.time_to_first_chunk.observe(ttft)
        if chunks:
            self.chunks_sent.inc(chunks)

    def generation_cancelled(self, reason: str) -> None:
        self.generations_cancelled.labels(reason).inc()

    def connection_ended(self, pings: int, blocked: float, disconnected: bool) -> None:
        """Per-connection counters, added once when an SSE connection ends."""
        if pings:
            self.pings.inc(pings)
        if blocked:
            self.send_blocked.inc(blocked)
        if disconnected:
            self.client_disconnects.inc()

    def resumed(self, source: str, replayed: int) -> None:
        self.resumes.labels(source).inc()
        if replayed:
            self.replayed_events.inc(replayed)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def upstream_request(self, outcome: str, first_token: float | None = None) -> None:
        self.upstream_requests.labels(outcome).inc()
        if first_token is not None:
            self.upstream_first_token.observe(first_token)

    def http_request(self, method: str, route: str, status: int) -> None:
        self.http_requests.labels(method, route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text, aggregated over all workers in multiprocess mode."""
        if self.multiprocess_dir and os.path.isdir(self.multiprocess_dir):
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
