"""Reading a `POST /v1/chat/completions` body: OpenAI's request shape, validated.

Accepted: `messages` (roles `system`, `developer`, `user`, `assistant`; text
content, as a string or a list of text parts), `stream`,
`stream_options.include_usage`, `model` (any value: the configured engine
answers), `n` (1 only), and the extension `conversation_id`. Sampling
parameters (`temperature`, `max_tokens`, ...) are accepted and ignored: they
are the server's settings. Tools, images and audio are refused with a 422
rather than silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from chatbot_sse.domain import Role, is_conversation_id
from chatbot_sse.errors import InvalidConversationId, InvalidInput, PayloadTooLarge

__all__ = ["NEW_CONVERSATION", "CompletionRequest", "parse_completion_request"]

NEW_CONVERSATION = "new"
"""`conversation_id: "new"` starts a stored conversation; its id comes back in `X-Conversation-Id`."""

_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
}


@dataclass(slots=True, frozen=True)
class CompletionRequest:
    messages: list[tuple[Role, str]]
    stream: bool
    include_usage: bool
    conversation_id: str | None  # None: stateless; NEW_CONVERSATION or an id: stored

    @property
    def last_user_text(self) -> str:
        return next(text for role, text in reversed(self.messages) if role is Role.USER)


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidInput(f"{where}: only text content parts are supported")
            if not isinstance(part.get("text"), str):
                raise InvalidInput(f"{where}: a text part needs a string 'text'")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidInput(f"{where}: 'content' must be a string or a list of text parts")


def _messages(raw: Any) -> list[tuple[Role, str]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'messages' must be a non-empty array")
    messages: list[tuple[Role, str]] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidInput(f"{where} must be an object")
        name = message.get("role")
        role = _ROLES.get(name) if isinstance(name, str) else None
        if role is None:
            raise InvalidInput(
                f"{where}: role {message.get('role')!r} is not supported "
                "(system, developer, user, assistant)"
            )
        messages.append((role, _text(message.get("content"), where)))
    return messages


def _wants_other_than_text(modalities: Any) -> bool:
    """True unless `modalities` is absent or asks for text alone."""
    return modalities is not None and modalities != ["text"]


def _conversation_id(value: Any) -> str | None:
    if value is None:
        return None
    if value == NEW_CONVERSATION:
        return NEW_CONVERSATION
    if not isinstance(value, str) or not is_conversation_id(value):
        raise InvalidConversationId(
            "'conversation_id' must be an id this server gave out, or \"new\""
        )
    return value


def parse_completion_request(body: bytes, max_chars: int) -> CompletionRequest:
    """Validate a request body; `InvalidInput` (422) or `PayloadTooLarge` (413) if it is wrong."""
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise InvalidInput("JSON body must be an object")
    messages = _messages(fields.get("messages"))
    if fields.get("n") not in (None, 1):
        raise InvalidInput("'n' must be 1: one choice per request")
    if fields.get("tools") or fields.get("functions"):
        raise InvalidInput("tools and functions are not supported")
    if fields.get("audio") is not None or _wants_other_than_text(fields.get("modalities")):
        raise InvalidInput("only text output is supported: no 'audio', 'modalities' [\"text\"]")
    stream = fields.get("stream") or False
    options = fields.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise InvalidInput("'stream' must be a boolean and 'stream_options' an object")
    users = [text for role, text in messages if role is Role.USER]
    if not users or not users[-1].strip():
        raise InvalidInput("'messages' must contain a user message with text")
    if len(users[-1].strip()) > max_chars:
        raise PayloadTooLarge(
            f"the last user message is {len(users[-1].strip())} characters; the limit is {max_chars}",
            code="message_too_long",
        )
    return CompletionRequest(
        messages,
        stream,
        bool(options.get("include_usage")),
        _conversation_id(fields.get("conversation_id")),
    )
