"""`GET /conversations/{id}/history`: a conversation's stored messages, oldest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from chatbot_sse.api.access import request_owner
from chatbot_sse.domain import is_conversation_id
from chatbot_sse.errors import ConversationNotFound, InvalidConversationId
from chatbot_sse.stores.base import Store

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
async def history(conversation_id: str, request: Request) -> dict[str, Any]:
    store: Store = request.app.state.store
    await require_conversation(store, conversation_id, request_owner(request))
    messages = await store.history(conversation_id)
    return {
        "conversation_id": conversation_id,
        "messages": [message.to_json() for message in messages],
    }
