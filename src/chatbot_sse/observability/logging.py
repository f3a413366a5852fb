"""structlog set up once: JSON lines in production, a readable console in DEBUG.

Request-scoped fields go into every log line of a request without passing a
logger around: the request id from a context variable of its own (`REQUEST_ID`),
anything else bound with `structlog.contextvars`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from mypy_extensions import mypyc_attr

REQUEST_ID: ContextVar[str | None] = ContextVar("chatbot_sse_request_id", default=None)
"""The id of the request being served (`observability.asgi`), added to its log lines by
`add_request_id`. A variable of its own, set and reset once per request: structlog's
`bind_contextvars` and `unbind_contextvars` cost 1.6 us a request on this project's machines
(a variable looked up by a prefixed name, a dict of tokens), a `set` and a `reset` 0.1 us."""


def add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current request's id, unless the line names one itself."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def request_log_fields() -> dict[str, Any]:
    """The request-scoped fields of the current context, for lines logged on another thread."""
    fields = structlog.contextvars.get_contextvars()
    request_id = REQUEST_ID.get()
    if request_id is not None:
        fields.setdefault("request_id", request_id)
    return fields


@mypyc_attr(native_class=False)  # compiled, it keeps its looked-up methods as attributes
class ModuleLogger:
    """`structlog.get_logger(name)`, with each method looked up once it can be kept.

    structlog's lazy proxy finds its logger again on every call (`__getattr__`, then
    `bind`): a filtered-out `info` cost 0.77 us through it against 0.26 us on the logger
    itself, and a reply logs three. Once structlog is configured to cache its loggers on
    first use (`configure_logging` does), the proxy returns one logger for good, so its
    methods are kept here as attributes, found before `__getattr__` is asked again. Before
    that (a line logged at import time, or in a process that never configures logging),
    every call asks the proxy, as structlog would.
    """

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)

    def __getattr__(self, method: str) -> Any:
        found = getattr(self._proxy.bind(), method)
        if structlog.get_config()["cache_logger_on_first_use"]:
            setattr(self, method, found)
        return found


def get_logger(name: str) -> Any:
    """A module's logger (`log = get_logger(__name__)`): structlog's, looked up once."""
    return ModuleLogger(name)


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
        add_request_id,
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
