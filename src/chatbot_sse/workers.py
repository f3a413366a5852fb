"""The gunicorn worker class: uvicorn-worker's, with a graceful shutdown that really waits.

The stock `uvicorn_worker.UvicornWorker` passes no `timeout_graceful_shutdown`
to uvicorn, so on SIGTERM uvicorn does not give open streams a bounded time to
finish; gunicorn then kills the worker after `graceful_timeout` and the
streams' cleanup (storing the partial reply) never runs. This subclass sets
uvicorn's timeout a little below gunicorn's, so uvicorn cancels what is left
in time for the cancellation handlers to run before gunicorn's SIGKILL.
It also serves HTTP with `RequestDeadlineProtocol`, so a client that trickles
its request is closed after `REQUEST_READ_TIMEOUT` (see `request_deadline`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker as _StockWorker  # type: ignore[import-untyped]

SHUTDOWN_MARGIN_SECONDS = 3
# After DRAIN_SECONDS the streams left are handed off; this long is then left for the cleanup.
DRAIN_CLEANUP_SECONDS = 10
HTTP_PROTOCOL = "chatbot_sse.request_deadline:RequestDeadlineProtocol"
H11_PROTOCOL = "chatbot_sse.request_deadline:H11DeadlineProtocol"


def graceful_shutdown_timeout(gunicorn_graceful_timeout: float) -> int:
    """uvicorn's share of gunicorn's graceful timeout, leaving time for cleanup."""
    return max(1, int(gunicorn_graceful_timeout) - SHUTDOWN_MARGIN_SECONDS)


def drain_graceful_timeout(drain_seconds: float) -> int:
    """The graceful timeout that lets draining reach its handoff: DRAIN_SECONDS plus cleanup.

    gunicorn's `graceful_timeout` (gunicorn.conf.py); a single uvicorn process
    (`chatbot-sse serve`) uses `graceful_shutdown_timeout` of it, as a worker does.
    """
    return int(drain_seconds) + DRAIN_CLEANUP_SECONDS


class UvicornWorker(_StockWorker):  # type: ignore[misc]  # untyped base class
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": HTTP_PROTOCOL,
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = graceful_shutdown_timeout(self.cfg.graceful_timeout)


class UvicornH11Worker(UvicornWorker):
    """The same worker on asyncio's own event loop and h11, uvicorn's pure-Python stack
    (`gunicorn -k chatbot_sse.workers.UvicornH11Worker`): where uvloop or httptools cannot be
    installed (PyPy, an unusual platform), and the stack issue 8's targets are judged on
    (`make bench`, docs/bench.md)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "loop": "asyncio",
        "http": H11_PROTOCOL,
    }
