"""Opens the store and the engine when a worker starts, closes them when it stops.

Runs inside each worker process, after gunicorn's fork: no connection or
thread is ever created at import time.

A store that `reconnects` (Redis) and is unreachable at start does not stop
the worker from booting: it starts degraded (`/health` 503, store calls 503
`store_unavailable`) and keeps trying to open the store in the background, so
a fleet restarted while Redis is down comes back by itself.

SIGTERM starts the `ReplyHub`'s draining at once (see `draining`), long
before uvicorn runs this lifespan's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from chatbot_sse.api.limits import StreamGate
from chatbot_sse.config import Settings
from chatbot_sse.draining import on_sigterm
from chatbot_sse.engines import create_engine
from chatbot_sse.errors import ChatError, StoreUnavailable
from chatbot_sse.observability.logging import get_logger
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import ReplyHub
from chatbot_sse.stores import Store, create_store
from chatbot_sse.turns import TurnService

log = get_logger(__name__)

REOPEN_INTERVAL = 1.0  # seconds between attempts to open a store that was down at start


class StartupFailed(Exception):
    """The worker cannot start; the message says why (a store or engine it cannot open)."""


def _cannot_start(exc: Exception) -> StartupFailed:
    """Say why in one log line, first; the server's own report (a traceback) comes after, cut
    short to where the lifespan gave up rather than the whole chain that led there."""
    reason = exc.message if isinstance(exc, ChatError) else str(exc)
    log.error("cannot_start", reason=reason, error=type(exc).__name__)
    return StartupFailed(reason)


async def _open_store(store: Store) -> asyncio.Task[None] | None:
    """Open the store; if it is down but `reconnects`, a task that keeps trying instead."""
    try:
        await store.open()
    except StoreUnavailable as exc:
        if not store.reconnects:
            raise
        log.error("store_unavailable_at_start", store=store.backend, error=str(exc))
        return asyncio.ensure_future(_keep_opening(store))
    return None


async def _keep_opening(store: Store) -> None:
    while True:
        await asyncio.sleep(REOPEN_INTERVAL)
        try:
            await store.open()
        except StoreUnavailable:
            continue
        log.info("store_opened", store=store.backend)
        return


GC_YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    Modules, the app, pydantic and FastAPI's structures never die, yet every
    full collection walked them all: tens of milliseconds, at the 99th
    percentile of every reply (docs/bench.md). Frozen, they are skipped; what
    requests allocate is collected as before, only less often: a reply
    allocates about a thousand objects that its end frees by reference
    counting, and at the default threshold a collection every 700 caught the
    replies in flight mid-way, walked them and promoted them to older
    generations, to be walked again there. At `GC_YOUNG_THRESHOLD` most are
    gone before a collection comes (wrk, one worker, six pairs side by side:
    CPU per reply 448 -> 411 us).
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def make_lifespan(
    settings: Settings, metrics: Metrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            store = create_store(
                settings.store_url,
                event_retention=settings.event_retention_seconds,
                conversation_ttl=settings.conversation_ttl_seconds,
            )
            engine = create_engine(settings)
        except ValueError as exc:
            raise _cannot_start(exc) from None
        if (instrument := getattr(engine, "instrument", None)) is not None:
            instrument(metrics)  # engines that count their own work (upstream requests)
        try:
            opening = await _open_store(store)
        except StoreUnavailable as exc:
            raise _cannot_start(exc) from None
        try:
            try:
                await engine.open()
            except (ChatError, ValueError, OSError) as exc:
                raise _cannot_start(exc) from None
            try:
                app.state.store = store
                app.state.engine = engine
                app.state.turns = TurnService(
                    store,
                    engine,
                    metrics,
                    settings.max_history_length,
                    log_content=settings.log_content,
                )
                replies = ReplyHub(
                    store,
                    settings.disconnect_grace_seconds,
                    settings.max_stream_seconds,
                )
                app.state.replies = replies
                app.state.gate = StreamGate.from_settings(store, metrics, settings)
                unhook = on_sigterm(lambda: replies.drain(settings.drain_seconds))
                log.info("started", store=store.backend, engine=engine.name)
                _freeze_startup_objects()
                try:
                    yield
                finally:
                    unhook()
                    await replies.close()
            finally:
                await engine.close()
        finally:
            if opening is not None:
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
            await store.close()
            log.info("stopped")

    return lifespan
