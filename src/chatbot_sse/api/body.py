"""Reading and validating a `POST /chat` body, whatever its media type.

The body is read here rather than by FastAPI's parameter machinery because one
endpoint accepts JSON, urlencoded and multipart forms, and because every way a
body can be wrong (too big, not UTF-8, not JSON, wrong types) must end in a
clear 4xx, never in a 500.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from chatbot_sse.domain import is_conversation_id
from chatbot_sse.errors import (
    IncompleteBody,
    InvalidConversationId,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)


@dataclass(slots=True, frozen=True)
class ChatRequest:
    message: str
    conversation_id: str | None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (by Content-Length) or as soon as it exceeds `limit`.

    Read from the request's `receive` itself, not through `request.stream()`: that is an
    async generator per request (an object, the event loop's first-iteration hook and its
    weak set, a finaliser), for a body that nearly always comes in one message. Nothing
    reads the body again after this.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    receive = request.receive
    pieces = bytearray()
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise IncompleteBody("the connection closed before the request body was complete")
        if kind != "http.request":
            continue
        body: bytes | bytearray = message.get("body", b"")
        more = message.get("more_body", False)
        if pieces or more:  # in several messages: gathered (one message is taken as it is)
            pieces += body
            body = pieces
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        if not more:
            return bytes(body)  # the same object when it is bytes already


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser silently decodes invalid UTF-8 fields as latin-1; refuse them."""

    def on_part_end(self) -> None:
        if self._current_part.file is None:
            bytes(self._current_part.data).decode(self._charset)  # UnicodeDecodeError if invalid
        super().on_part_end()


async def _single(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def _fields(request: Request, body: bytes) -> dict[str, object]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidInput("JSON body must be an object")
        return parsed
    if media_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise InvalidInput("form body is not valid UTF-8") from None
        fields: dict[str, object] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields
    if media_type == "multipart/form-data":
        try:
            form = await _StrictMultiPartParser(request.headers, _single(body)).parse()
        except (MultiPartException, UnicodeDecodeError) as exc:
            raise InvalidInput(f"malformed multipart body: {exc}") from None
        try:
            return {key: form[key] for key in form}
        finally:
            await form.close()
    raise UnsupportedMediaType(
        "send application/json, application/x-www-form-urlencoded or multipart/form-data"
    )


def validate_chat_fields(fields: dict[str, object], max_chars: int) -> ChatRequest:
    """Apply the contract's rules to already-parsed fields."""
    message = fields.get("message")
    if message is None:
        raise InvalidInput("field 'message' is required")
    if isinstance(message, UploadFile) or not isinstance(message, str):
        raise InvalidInput("field 'message' must be a string")
    message = message.strip()
    if not message:
        raise InvalidInput("field 'message' must not be blank")
    if len(message) > max_chars:
        raise PayloadTooLarge(
            f"field 'message' is {len(message)} characters; the limit is {max_chars}",
            code="message_too_long",
        )
    conversation_id = fields.get("conversation_id")
    if conversation_id in (None, ""):
        return ChatRequest(message, None)
    if not isinstance(conversation_id, str) or not is_conversation_id(conversation_id):
        raise InvalidConversationId("field 'conversation_id' is not a conversation id")
    return ChatRequest(message, conversation_id)


async def parse_chat_request(request: Request, max_body: int, max_chars: int) -> ChatRequest:
    body = await read_body(request, max_body)
    return validate_chat_fields(await _fields(request, body), max_chars)
