"""structlog set up once: JSON lines in production, a readable console in DEBUG.

Request-scoped fields (the request id) are bound with
`structlog.contextvars`, so every log line of a stream carries them without
passing a logger around.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def _add_pid(pid: int) -> structlog.typing.Processor:
    """Tag lines with the worker's pid: under gunicorn, several workers share one log."""

    def add_pid(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["pid"] = pid
        return event

    return add_pid


def configure_logging(level: str, debug: bool) -> None:
    """Route structlog and the standard library (uvicorn, gunicorn) through one pipeline.

    Called from `create_app`, i.e. in each worker after the fork, so the pid is the worker's.
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_pid(os.getpid()),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        # Tracebacks without local variables: they would print message content and keys.
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if debug
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per line: `print` writes the record and its newline in two, and on a
        # stderr that gunicorn's workers share another worker's line can land between them.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn.access is left as the server set it up: `--no-access-log` must stay off.
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx logs each upstream request (ENGINE=openai) at INFO: a line per reply, on the hot path.
    quiet = root.level > logging.DEBUG
    logging.getLogger("httpx").setLevel(logging.WARNING if quiet else logging.NOTSET)
