"""Resuming and cancelling replies: `GET .../stream` and `POST .../cancel`.

`GET /conversations/{id}/stream` is what a browser's `EventSource` reconnects
to: it replays the events after `Last-Event-ID` (header, or `?last_event_id=`)
and follows the reply to its end, from this worker's memory when the reply is
generated here, else from the store's log (another worker or instance). A
reply with nothing left to send answers 204, which tells `EventSource` to stop
reconnecting; one whose events have expired answers 410 with the stored
message; an unknown one 404; an id ahead of a reply generated here 422 (the
log of one generated elsewhere may lag behind it, so there it cannot tell). It
never hangs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from chatbot_sse import sse
from chatbot_sse.api.access import client_identity, request_owner
from chatbot_sse.api.conversations import require_conversation
from chatbot_sse.api.limits import StreamGate, connection_seconds
from chatbot_sse.api.streaming import (
    EVENT_SCHEMA,
    EventStreamResponse,
    FrameSource,
    LogSource,
    hub_source,
)
from chatbot_sse.config import Settings
from chatbot_sse.errors import InvalidInput, NotFound
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.replies import ReplyHub
from chatbot_sse.stores.base import Store, reply_state

router = APIRouter()

EVENT_ID_RE = re.compile(r"^([0-9a-f]{28}):(\d{1,9})$")


def parse_event_id(value: str) -> tuple[str, int]:
    match = EVENT_ID_RE.fullmatch(value.strip())
    if match is None:
        raise InvalidInput(
            "Last-Event-ID is not an event id of this server", code="invalid_event_id"
        )
    return match.group(1), int(match.group(2))


@router.get(
    "/conversations/{conversation_id}/stream",
    summary="Resume a reply after Last-Event-ID and follow it to its end (SSE)",
    response_class=EventStreamResponse,
    status_code=200,
    responses={
        200: {"content": {"text/event-stream": {"schema": EVENT_SCHEMA}}},
        204: {"description": "Nothing left to send: the reply has ended"},
        404: {"description": "Unknown conversation or reply"},
        410: {"description": "The reply's events have expired; its stored message is included"},
        422: {"description": "Malformed id"},
    },
)
async def resume(
    conversation_id: str,
    request: Request,
    last_event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    state = request.app.state
    store: Store = state.store
    hub: ReplyHub = state.replies
    settings: Settings = state.settings
    metrics: Metrics = state.metrics
    gate: StreamGate = state.gate
    await require_conversation(store, conversation_id, request_owner(request))
    value = request.headers.get("last-event-id") or last_event_id
    if value:
        reply_id, after_seq = parse_event_id(value)
    else:
        live_here = hub.live_reply_of(conversation_id)
        found = live_here.reply_id if live_here else await store.latest_reply(conversation_id)
        if found is None:
            raise NotFound("this conversation has no reply to stream", code="reply_not_found")
        reply_id, after_seq = found, -1

    source: FrameSource
    live = hub.attach(reply_id)
    if live is not None and live.conversation_id == conversation_id:
        if live.finished and after_seq + 1 >= len(live.frames):
            hub.detach(live)
            return Response(status_code=204)
        if after_seq >= len(live.frames):  # no client can have seen an event not made yet
            hub.detach(live)
            raise InvalidInput(
                f"Last-Event-ID {value} is ahead of this reply", code="invalid_event_id"
            )
        metrics.resumed("live", max(0, len(live.frames) - after_seq - 1))
        source = hub_source(hub, live, after_seq + 1)
    else:
        if live is not None:
            hub.detach(live)
        first = await store.read_events(conversation_id, reply_id, after_seq)
        if not first.exists:
            return await _gone_or_missing(store, conversation_id, reply_id)
        if first.finished and not first.events:
            return Response(status_code=204)
        metrics.resumed("log", len(first.events))
        source = LogSource(store, conversation_id, reply_id, after_seq, first)
    try:
        release = await gate.enter(client_identity(request))
    except BaseException:
        await source.close()
        raise
    return EventStreamResponse(
        source,
        keepalive=settings.keepalive_seconds,
        metrics=metrics,
        headers={"X-Conversation-Id": conversation_id},
        # Frame 0 carries `retry:` itself; a resume past it gets the advice up front.
        prefix=sse.retry_field(settings.sse_retry_ms) + b"\n" if after_seq >= 0 else b"",
        max_backlog=settings.stream_backlog_bytes,
        max_seconds=connection_seconds(settings),
        on_close=release,
        handoff=hub.handoff,
        retry_ms=settings.sse_retry_ms,
    )


async def _gone_or_missing(store: Store, conversation_id: str, reply_id: str) -> Response:
    """410 with the stored result for an expired reply, 404 for one that never was."""
    for message in await store.history(conversation_id):
        if message.id == reply_id:
            error = {"code": "reply_expired", "message": "this reply's events are no longer kept"}
            body: dict[str, Any] = {"error": error, "message": message.to_json()}
            return JSONResponse(body, status_code=410)
    raise NotFound(f"no reply {reply_id} in this conversation", code="reply_not_found")


@router.post(
    "/conversations/{conversation_id}/cancel",
    summary="Stop the reply being generated in this conversation",
    responses={404: {"description": "Unknown conversation, or no reply"}},
)
async def cancel(conversation_id: str, request: Request) -> JSONResponse:
    state = request.app.state
    store: Store = state.store
    hub: ReplyHub = state.replies
    await require_conversation(store, conversation_id, request_owner(request))
    live = hub.live_reply_of(conversation_id)
    if live is not None:
        stopped = hub.cancel(live, "cancelled")
        status = "cancelled" if stopped else "finished"
        return JSONResponse(
            {"conversation_id": conversation_id, "reply_id": live.reply_id, "status": status}
        )
    reply_id = await store.latest_reply(conversation_id)
    if reply_id is None:
        raise NotFound("this conversation has no reply to cancel", code="reply_not_found")
    state_now = await reply_state(store, conversation_id, reply_id)
    if state_now.finished or not state_now.exists:
        body = {"conversation_id": conversation_id, "reply_id": reply_id, "status": "finished"}
        return JSONResponse(body)
    await store.request_cancel(conversation_id, reply_id)
    body = {"conversation_id": conversation_id, "reply_id": reply_id, "status": "cancelling"}
    return JSONResponse(body, status_code=202)
