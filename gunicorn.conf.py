"""Production gunicorn settings; values come from the same Settings as the app.

    gunicorn -c gunicorn.conf.py chatbot_sse.main:app

No `max_requests`: recycling a worker would cut the live streams it holds.
No `preload_app`: each worker opens its own store connections after the fork.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from chatbot_sse.config import load_settings
from chatbot_sse.workers import drain_graceful_timeout

_settings = load_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
worker_class = "chatbot_sse.workers.UvicornWorker"
worker_connections = 1000
timeout = 30  # heartbeat: the event loop is never blocked, so a live worker always answers
keepalive = 2
# On SIGTERM / HUP, streams in flight get DRAIN_SECONDS to finish, then are handed off
# (`reconnect`); the rest of the graceful timeout is for the cleanup after that.
graceful_timeout = drain_graceful_timeout(_settings.drain_seconds)
max_requests = 0
preload_app = False
accesslog = None  # the app logs requests itself; uvicorn's access log is noise under load
loglevel = _settings.log_level.lower()


def on_starting(server: Any) -> None:
    """Give prometheus-client a fresh shared directory before any worker imports it."""
    path = _settings.prometheus_multiproc_dir or os.path.join(
        tempfile.gettempdir(), f"chatbot-sse-metrics-{os.getpid()}"
    )
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges so `active_streams` stays true."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
