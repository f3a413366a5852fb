"""`GET /health` and `GET /metrics`: what load balancers and Prometheus poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from chatbot_sse import __version__
from chatbot_sse.engines.base import Engine
from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.stores.base import Store

router = APIRouter()

HEALTH_TIMEOUT = 2.0


async def _store_state(store: Store) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await store.ping()
    except (StoreUnavailable, TimeoutError) as exc:
        return {"backend": store.backend, "status": "unavailable", "error": str(exc) or "timeout"}
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return {"backend": store.backend, "status": "ok", "latency_ms": latency_ms}


@router.get(
    "/health",
    summary="Liveness and the state of the store and engine",
    responses={503: {"description": "Draining, or the store is degraded (same JSON body)"}},
)
async def health(request: Request) -> JSONResponse:
    """200 `ok`; 503 `degraded` (the store is down) or `draining` (shutting down: send no more)."""
    store: Store = request.app.state.store
    engine: Engine = request.app.state.engine
    draining = request.app.state.replies.draining
    store_state = await _store_state(store)
    healthy = store_state["status"] == "ok" and not draining
    status = "draining" if draining else "ok" if healthy else "degraded"
    body = {
        "status": status,
        "version": __version__,
        "store": store_state,
        "engine": await engine.health(),
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics, aggregated over all workers",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: {"description": "API key missing or invalid (when API_KEYS is set)"},
    },
)
async def metrics(request: Request) -> Response:
    collected: Metrics = request.app.state.metrics
    payload, content_type = await asyncio.to_thread(collected.render)
    return Response(payload, media_type=content_type)
