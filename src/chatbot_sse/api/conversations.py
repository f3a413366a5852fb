"""A conversation's stored messages (`GET /conversations/{id}/history`, whole or a page at a
time) and its deletion (`DELETE /conversations/{id}`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from chatbot_sse.api.access import request_owner
from chatbot_sse.domain import is_conversation_id
from chatbot_sse.errors import ConversationNotFound, InvalidConversationId
from chatbot_sse.observability.logging import get_logger
from chatbot_sse.replies import ReplyHub
from chatbot_sse.stores.base import Store, reply_state

MAX_PAGE = 1000
"""The most messages one page of history holds."""
DEFAULT_PAGE = 100
"""A page's size when `before` is given without `limit`."""

log = get_logger(__name__)

router = APIRouter()


async def require_conversation(store: Store, conversation_id: str, owner: str | None) -> None:
    """422 for something that cannot be an id, 404 for an id nobody created or another owner's.

    `owner` None (no API keys) checks no owner: the id itself is the capability.
    """
    if not is_conversation_id(conversation_id):
        raise InvalidConversationId("not a conversation id")
    found = await store.get_conversation(conversation_id)
    if found is None or (owner is not None and found.owner != owner):
        raise ConversationNotFound(f"conversation {conversation_id} does not exist")


@router.get(
    "/conversations/{conversation_id}/history",
    summary="A conversation's messages, oldest first",
    responses={404: {"description": "Unknown conversation"}, 422: {"description": "Bad id"}},
)
async def history(
    conversation_id: str,
    request: Request,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE,
            description="Only the newest `limit` messages (before `before`, if given).",
        ),
    ] = None,
    before: Annotated[
        int | None,
        Query(
            ge=0,
            description="Only messages older than this point: a page's `next_before`.",
        ),
    ] = None,
) -> dict[str, Any]:
    """Without `limit` and `before`, every message. With them, one page: the newest `limit`
    messages older than `before`; `next_before` (null on the oldest page) asks for the page
    before it. A page stays valid while the conversation grows."""
    store: Store = request.app.state.store
    await require_conversation(store, conversation_id, request_owner(request))
    if limit is None and before is None:
        messages = await store.history(conversation_id)
        start = 0
    else:
        page = await store.history_page(conversation_id, limit or DEFAULT_PAGE, before)
        messages, start = page.messages, page.start
    return {
        "conversation_id": conversation_id,
        "messages": [message.to_json() for message in messages],
        "has_more": start > 0,
        "next_before": start if start > 0 else None,
    }


@router.delete(
    "/conversations/{conversation_id}",
    summary="Delete a conversation, its messages and its replies, for good",
    status_code=204,
    responses={404: {"description": "Unknown conversation"}, 422: {"description": "Bad id"}},
)
async def delete(conversation_id: str, request: Request) -> Response:
    """A reply still generating is stopped first: its stream ends with the `error` event
    `deleted`. Then everything of the conversation goes, in every worker and instance at
    once (they share the store). A message sent to it afterwards gets 404."""
    state = request.app.state
    store: Store = state.store
    hub: ReplyHub = state.replies
    await require_conversation(store, conversation_id, request_owner(request))
    reply_id = await store.latest_reply(conversation_id)
    if reply_id is not None:
        running = await reply_state(store, conversation_id, reply_id)
        if running.exists and not running.finished:
            await hub.supersede(conversation_id, reply_id, "deleted")
    if not await store.delete_conversation(conversation_id):
        raise ConversationNotFound(f"conversation {conversation_id} does not exist")
    log.info("conversation_deleted", conversation_id=conversation_id)
    return Response(status_code=204)
