"""MemoryStore: conversations in dicts, for tests and single-process demos.

Nothing survives the process, and gunicorn workers would each see their own
dicts, so it is never a production choice. It follows the same contract as the
persistent stores, down to the details tests might otherwise come to rely on by
accident: it must be opened before use, refuses calls once closed, and keeps
`meta` as a JSON round-tripped copy (JSON types only, no aliasing with the
caller's dict; orjson's types, so integers within 64 bits), exactly what SQLite
or Redis would hand back, and rejects content that is not valid Unicode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from chatbot_sse.domain import Conversation, Message
from chatbot_sse.errors import ConversationNotFound, StoreUnavailable

__all__ = ["MemoryStore", "from_url"]


def _json_copy(meta: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(meta)) if meta else {}
    return copied


class MemoryStore:
    """A `Store` held in this process's memory. Every call completes without awaiting."""

    backend = "memory"

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, list[Message]] = {}
        self._message_ids: set[str] = set()
        self._state = "new"

    def _check_open(self) -> None:
        if self._state != "open":
            state = "closed" if self._state == "closed" else "not open"
            raise StoreUnavailable(f"memory store is {state}")

    async def open(self) -> None:
        if self._state == "closed":
            raise StoreUnavailable("memory store is closed")
        self._state = "open"

    async def close(self) -> None:
        self._state = "closed"

    async def ping(self) -> None:
        self._check_open()

    async def create_conversation(self, conversation_id: str, created_at: float) -> Conversation:
        self._check_open()
        if conversation_id in self._conversations:
            raise ValueError(f"conversation {conversation_id!r} already exists")
        conversation = Conversation(conversation_id, created_at)
        self._conversations[conversation_id] = conversation
        self._messages[conversation_id] = []
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        self._check_open()
        return self._conversations.get(conversation_id)

    async def append_message(self, message: Message) -> None:
        self._check_open()
        messages = self._messages.get(message.conversation_id)
        if messages is None:
            raise ConversationNotFound(f"conversation {message.conversation_id!r} not found")
        if message.id in self._message_ids:
            raise ValueError(f"message {message.id!r} already exists")
        message.content.encode()  # UnicodeEncodeError (a ValueError) on lone surrogates, as SQLite
        messages.append(dataclasses.replace(message, meta=_json_copy(message.meta)))
        self._message_ids.add(message.id)

    async def history(self, conversation_id: str, limit: int | None = None) -> list[Message]:
        self._check_open()
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        messages = self._messages.get(conversation_id, [])
        if limit is not None:
            messages = messages[-limit:] if limit else []
        return [dataclasses.replace(m, meta=_json_copy(m.meta)) if m.meta else m for m in messages]


def from_url(url: str) -> MemoryStore:
    """`memory://`, nothing more: there is nothing to configure."""
    if url != "memory://":
        raise ValueError(f"invalid memory store URL {url!r}: use memory://")
    return MemoryStore()
