"""A stateless turn: the engine run over messages the client sent, nothing stored. No HTTP here.

`POST /v1/chat/completions` without the `conversation_id` extension is stateless,
as OpenAI's API is: the client sends the whole conversation every time. This
runs such a turn with the same events (`connected`, `message`…, `completed` or
`error`) and the same metrics as `TurnService.run`, so the transport can
handle both alike; only persistence is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import structlog

from chatbot_sse.domain import Message, Usage
from chatbot_sse.engines.base import Engine, Reservation, StreamResult, open_stream
from chatbot_sse.errors import ChatError
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.turns import EventSink, TurnEvent

log = structlog.get_logger(__name__)


async def run_oneshot(
    engine: Engine,
    metrics: Metrics,
    context: Sequence[Message],
    reply_id: str,
    emit: EventSink,
    reservation: Reservation | None = None,
) -> None:
    """Stream the engine's reply to `context` into `emit`; failures become an `error` event.

    `reservation`: the engine's queue place, taken before the response started.
    """
    parts: list[str] = []
    started = time.perf_counter()
    first_chunk_at: float | None = None
    outcome = "completed"
    metrics.stream_started()
    try:
        await emit(TurnEvent("connected", f"{reply_id}:0", {"type": "connected"}))
        result = StreamResult()
        async with contextlib.aclosing(open_stream(engine, context, result, reservation)) as chunks:
            async for chunk in chunks:
                if not chunk:
                    continue
                if first_chunk_at is None:
                    first_chunk_at = time.perf_counter()
                parts.append(chunk)
                data = {"type": "message", "content": chunk}
                await emit(TurnEvent("message", f"{reply_id}:{len(parts)}", data))
        reply = "".join(parts)
        usage = Usage(
            prompt_tokens=result.prompt_tokens
            if result.prompt_tokens is not None
            else sum(len(m.content.split()) for m in context),
            completion_tokens=result.completion_tokens
            if result.completion_tokens is not None
            else len(reply.split()),
        )
        completed = {
            "type": "completed",
            "content": reply,
            "finish_reason": result.finish_reason or "stop",
            "usage": usage.to_json(),
        }
        await emit(TurnEvent("completed", f"{reply_id}:{len(parts) + 1}", completed))
    except asyncio.CancelledError:
        outcome = "disconnected"
        raise
    except Exception as exc:
        outcome = "error"
        if not isinstance(exc, ChatError):
            log.exception("oneshot_failed", message_id=reply_id)
            exc = ChatError("the reply failed unexpectedly")
            exc.retryable = True
        metrics.error(exc.code)
        error = {"code": exc.code, "message": exc.message, "retryable": exc.retryable}
        failure: dict[str, Any] = {"type": "error", "error": error}
        await emit(TurnEvent("error", f"{reply_id}:{len(parts) + 1}", failure))
    finally:
        if reservation is not None:
            reservation.release()
        now = time.perf_counter()
        ttft = None if first_chunk_at is None else first_chunk_at - started
        metrics.stream_finished(outcome, now - started, ttft, len(parts))
