"""Opens the store and the engine when a worker starts, closes them when it stops.

Runs inside each worker process, after gunicorn's fork: no connection or
thread is ever created at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI

from chatbot_sse.api.limits import StreamGate
from chatbot_sse.config import Settings
from chatbot_sse.engines import create_engine
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import ReplyHub
from chatbot_sse.stores import create_store
from chatbot_sse.turns import TurnService

log = structlog.get_logger(__name__)


def make_lifespan(
    settings: Settings, metrics: Metrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = create_store(
            settings.store_url,
            event_retention=settings.event_retention_seconds,
            conversation_ttl=settings.conversation_ttl_seconds,
        )
        engine = create_engine(settings)
        if (instrument := getattr(engine, "instrument", None)) is not None:
            instrument(metrics)  # engines that count their own work (upstream requests)
        await store.open()
        try:
            await engine.open()
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
                    metrics,
                    settings.disconnect_grace_seconds,
                    settings.max_stream_seconds,
                )
                app.state.replies = replies
                app.state.gate = StreamGate.from_settings(store, metrics, settings)
                log.info("started", store=store.backend, engine=engine.name)
                try:
                    yield
                finally:
                    await replies.close()
            finally:
                await engine.close()
        finally:
            await store.close()
            log.info("stopped")

    return lifespan
