"""`/v1`: an OpenAI-compatible API, so OpenAI's own clients can talk to this server unchanged.

`POST /v1/chat/completions` (streaming and not) and `GET /v1/models`, backed
by whatever engine is configured. Stateless by default, as OpenAI's API is:
the client sends the whole conversation, nothing is stored. The extension
field `conversation_id` makes it stateful: `"new"` starts a stored
conversation, an id continues one; either way only the last user message is
taken from `messages`, the stored history is the context, the turn is stored
like a `POST /chat` turn, and the id comes back in `X-Conversation-Id` (and as
`conversation_id` in every chunk or completion).

Errors take OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`:
a status before a stream starts; after, a `data: {"error": ...}` line (which
the `openai` package raises as `APIError`), and no `[DONE]`.

Draining (SIGTERM): there is no resume here, so a completion still generating
when the worker hands off (after DRAIN_SECONDS, when `POST /chat` streams get
`reconnect`) is stopped with reason `shutdown` instead of being cut with the
connection: a stream ends with the error chunk (`code: "shutdown"`, `retryable:
true`) and then `data: [DONE]`, so every client sees a clean end and the
`openai` package raises `APIError` saying to send it again; a whole completion
answers `503` `shutdown` (which the `openai` package retries by itself). A
stored turn keeps its partial reply, `interrupted`, as `POST /chat` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from chatbot_sse.api.access import client_identity, request_owner
from chatbot_sse.api.body import read_body
from chatbot_sse.api.errors import (
    STREAM_ERROR_RESPONSES,
    chat_error_response,
    openai_error_response,
)
from chatbot_sse.api.limits import StreamGate, connection_seconds
from chatbot_sse.api.openai_body import (
    NEW_CONVERSATION,
    CompletionRequest,
    parse_completion_request,
)
from chatbot_sse.api.streaming import EVENT_SCHEMA, EventStreamResponse, task_source
from chatbot_sse.config import Settings
from chatbot_sse.domain import Message
from chatbot_sse.draining import Handoff
from chatbot_sse.engines.base import Engine
from chatbot_sse.errors import ChatError
from chatbot_sse.turns import EventSink, TurnEvent, TurnService

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

Runner = Callable[[EventSink], Awaitable[None]]

DONE = b"data: [DONE]\n\n"
_STATUS = {
    "upstream_timeout": 504,
    "engine_timeout": 504,
    "store_unavailable": 503,
    "engine_busy": 503,
    "shutdown": 503,
}
_OWNER = "chatbot-sse"


def model_id(engine: Engine) -> str:
    """What `/v1/models` lists and responses name: the upstream's model, else the engine."""
    return str(getattr(engine, "model", "") or engine.name)


def openai_error(status: int, code: str, message: str) -> JSONResponse:
    return openai_error_response(status, code, message)


class _Chunks:
    """`chat.completion.chunk` frames for one reply; the fixed fields are encoded once."""

    def __init__(self, completion_id: str, model: str, extra: dict[str, str]) -> None:
        self.head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            **extra,
        }

    def frame(self, delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**self.head, "choices": [choice]}) + b"\n\n"

    def usage(self, usage: dict[str, int]) -> bytes:
        return b"data: " + orjson.dumps({**self.head, "choices": [], "usage": usage}) + b"\n\n"


def _error_body(error: dict[str, Any]) -> dict[str, Any]:
    return {"message": error["message"], "type": "server_error", "param": None, **error}


async def _until_handoff(run: Runner, emit: EventSink, handoff: Handoff) -> None:
    """Run the turn; the worker's handoff cancels it with `shutdown` (it then emits `error`).

    Returns normally when the handoff stopped it (the `error` event says so);
    a cancellation from outside (the client left) propagates as usual.
    """
    generation = asyncio.ensure_future(run(emit))

    def stop() -> None:
        generation.cancel("shutdown")

    unregister = handoff.register(stop)
    try:
        await generation
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    finally:
        unregister()


def _stream(
    run: Runner, chunks: _Chunks, include_usage: bool, handoff: Handoff
) -> Callable[..., Awaitable[None]]:
    async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
        async def emit(event: TurnEvent) -> None:
            data = event.data
            if event.name == "message":
                await write(chunks.frame({"content": data["content"]}))
            elif event.name == "connected":
                await write(chunks.frame({"role": "assistant", "content": ""}))
            elif event.name == "completed":
                tail = chunks.frame({}, data["finish_reason"])
                if include_usage:
                    tail += chunks.usage(data["usage"])
                await write(tail + DONE)
            elif event.name == "error":
                payload = {"error": _error_body(data["error"])}
                frame = b"data: " + orjson.dumps(payload) + b"\n\n"
                # Handed off: the stream itself is sound, so it ends the way streams end.
                await write(frame + DONE if data["error"]["code"] == "shutdown" else frame)

        await _until_handoff(run, emit, handoff)

    return produce


async def _complete(
    run: Runner, completion_id: str, model: str, extra: dict[str, str], handoff: Handoff
) -> Response:
    events: dict[str, dict[str, Any]] = {}

    async def emit(event: TurnEvent) -> None:
        events[event.name] = event.data

    await _until_handoff(run, emit, handoff)
    if "error" in events:
        error = events["error"]["error"]
        status = _STATUS.get(error["code"], 500 if error["code"] == "internal_error" else 502)
        response = openai_error(status, error["code"], error["message"])
        if error["code"] == "shutdown":
            response.headers["Retry-After"] = "1"
        return response
    done = events["completed"]
    message = {"role": "assistant", "content": done["content"]}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": done["finish_reason"],
    }
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": done["usage"],
        **extra,
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=_headers(extra))


def _headers(extra: dict[str, str]) -> dict[str, str]:
    cid = extra.get("conversation_id")
    return {"X-Conversation-Id": cid} if cid else {}


async def _runner(
    request: Request, parsed: CompletionRequest
) -> tuple[Runner, str, dict[str, str]]:
    """How to run this turn, its completion id, and the extension fields of its answer."""
    service: TurnService = request.app.state.turns
    if parsed.conversation_id is None:
        now = time.time()
        context = [
            Message(f"m{index}", "", role, text, now)
            for index, (role, text) in enumerate(parsed.messages)
        ]
        turn = service.begin_stateless(context)
    else:
        wanted = None if parsed.conversation_id == NEW_CONVERSATION else parsed.conversation_id
        owner = request_owner(request)
        turn = await service.begin(parsed.last_user_text.strip(), wanted, owner=owner)

    async def stored(emit: EventSink) -> None:
        await service.run(turn, emit)

    extra = {"conversation_id": turn.conversation_id} if turn.conversation_id else {}
    return stored, turn.reply_id, extra


_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "description": "Any value: the configured engine answers."},
        "messages": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "conversation_id": {
            "type": "string",
            "description": 'Extension: "new" or a stored conversation\'s id; the history is kept here.',
        },
    },
}


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion, streamed (SSE) or whole",
    response_model=None,
    responses={
        200: {
            "description": "The completion as JSON, or as SSE chunks with `stream: true`",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        400: {"description": "Invalid request (OpenAI's error shape)"},
        **STREAM_ERROR_RESPONSES,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
        }
    },
)
async def chat_completions(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    gate: StreamGate = request.app.state.gate
    try:
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_completion_request(body, settings.max_message_chars)
        release = await gate.enter(client_identity(request))
    except ChatError as exc:
        return chat_error_response(exc, openai=True)
    try:
        run, reply_id, extra = await _runner(request, parsed)
        completion_id = f"chatcmpl-{reply_id}"
        model = model_id(request.app.state.engine)
        handoff: Handoff = request.app.state.replies.handoff
        if not parsed.stream:
            try:
                return await _complete(run, completion_id, model, extra, handoff)
            finally:
                await release()
        chunks = _Chunks(completion_id, model, extra)
        return EventStreamResponse(
            task_source(
                _stream(run, chunks, parsed.include_usage, handoff), settings.max_stream_seconds
            ),
            keepalive=settings.keepalive_seconds,
            metrics=request.app.state.metrics,
            headers=_headers(extra),
            max_backlog=settings.stream_backlog_bytes,
            max_seconds=connection_seconds(settings),
            on_close=release,
        )
    except ChatError as exc:
        await release()
        return chat_error_response(exc, openai=True)
    except BaseException:
        await release()
        raise


def _model(engine: Engine) -> dict[str, Any]:
    return {"id": model_id(engine), "object": "model", "created": 0, "owned_by": _OWNER}


@router.get("/models", summary="The model this server serves (its configured engine)")
async def models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model(request.app.state.engine)]}


@router.get(
    "/models/{model:path}",
    summary="One model",
    response_model=None,
    responses={404: {"description": "No such model (OpenAI's error shape)"}},
)
async def model(model: str, request: Request) -> Response:
    described = _model(request.app.state.engine)
    if model != described["id"]:
        return openai_error(404, "model_not_found", f"the model {model!r} does not exist")
    return JSONResponse(described)
