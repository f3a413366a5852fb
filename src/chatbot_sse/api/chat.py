"""`POST /chat`: validate, store the user's message, then stream the reply as SSE."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request

from chatbot_sse import sse
from chatbot_sse.api.body import parse_chat_request
from chatbot_sse.api.streaming import EventStreamResponse, hub_source
from chatbot_sse.config import Settings
from chatbot_sse.replies import Generate, ReplyHub
from chatbot_sse.turns import Turn, TurnEvent, TurnService

router = APIRouter()

_FIELDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "The user's message."},
        "conversation_id": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "Continue this conversation (an id this server gave out).",
        },
    },
}

_SSE_EXAMPLE = (
    "retry: 3000\nevent: connected\nid: 0190a1b2c3d4e5f6a7b8c9d0e1f2:0\n"
    'data: {"type": "connected", "conversation_id": "...", "message_id": "..."}\n\n'
)


def encoded_turn(service: TurnService, turn: Turn, retry_ms: int) -> Generate:
    """The turn as a generator of encoded SSE frames; the first carries `retry:`."""
    first_prefix = sse.retry_field(retry_ms)

    async def generate(write: Callable[[bytes], Awaitable[None]]) -> None:
        prefix = first_prefix

        async def emit(event: TurnEvent) -> None:
            nonlocal prefix
            frame = sse.encode_event(event.name, event.id, event.data, prefix)
            prefix = b""
            await write(frame)

        await service.run(turn, emit)

    return generate


@router.post(
    "/chat",
    summary="Send a message; the reply streams back as Server-Sent Events",
    response_class=EventStreamResponse,
    status_code=200,
    responses={
        200: {"content": {"text/event-stream": {"example": _SSE_EXAMPLE}}},
        404: {"description": "Unknown conversation_id"},
        413: {"description": "Body or message too large"},
        415: {"description": "Unsupported media type"},
        422: {"description": "Invalid input"},
        503: {"description": "Store unavailable"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _FIELDS_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _FIELDS_SCHEMA},
                "multipart/form-data": {"schema": _FIELDS_SCHEMA},
            },
        }
    },
)
async def chat(request: Request) -> EventStreamResponse:
    state = request.app.state
    settings: Settings = state.settings
    service: TurnService = state.turns
    hub: ReplyHub = state.replies
    body = await parse_chat_request(request, settings.max_body_bytes, settings.max_message_chars)
    turn = await service.begin(body.message, body.conversation_id)
    live = hub.start(
        turn.conversation_id, turn.reply_id, encoded_turn(service, turn, settings.sse_retry_ms)
    )
    return EventStreamResponse(
        hub_source(hub, live),
        keepalive=settings.keepalive_seconds,
        metrics=state.metrics,
        headers={"X-Conversation-Id": turn.conversation_id},
    )
