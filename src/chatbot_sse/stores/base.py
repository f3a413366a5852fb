"""The Store protocol: where conversations and their messages live.

Every implementation passes the one contract suite in
`tests/contracts/test_store_contract.py`. Calls never block the event loop:
backends doing blocking I/O run it on their own thread. Failures of the
backend itself surface as `StoreUnavailable`, never as a driver exception.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from chatbot_sse.domain import Conversation, Message


@runtime_checkable
class Store(Protocol):
    """Conversations and their messages, oldest first."""

    backend: str

    async def open(self) -> None:
        """Connect. Called in the lifespan, i.e. after gunicorn has forked."""

    async def close(self) -> None:
        """Release connections; pending writes are flushed first."""

    async def ping(self) -> None:
        """Return if the backend answers, else raise `StoreUnavailable`."""

    async def create_conversation(self, conversation_id: str, created_at: float) -> Conversation:
        """Create a conversation with a fresh id chosen by the caller."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None if it does not exist."""

    async def append_message(self, message: Message) -> None:
        """Durably add a message to its (existing) conversation."""

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        """Messages oldest first; with `limit`, only the newest `limit` of them."""
