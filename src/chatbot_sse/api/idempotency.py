"""`Idempotency-Key` on `POST /chat`: a retried request gets the first one's reply, once.

The first request with a key records, through the store (so every worker and
instance sees it), the hash of its body's fields and the ids of the reply it
is about to produce, *before* storing anything; then it runs normally. Any
later request with the same key (within `IDEMPOTENCY_TTL_SECONDS`, from the
same API key) adds no turn:

- same body: it gets the same reply, from its first event: live from memory if
  it is generated in this worker, else from the store's reply log (what
  `GET .../stream` replays); once the log's retention has run out, rebuilt from
  the stored message (`connected`, one `message`, `completed`);
- another body: 409 `idempotency_key_reused`;
- the first request has not started its reply yet (or died before): 409
  `idempotency_in_progress`, retryable;
- its conversation was deleted since: 404 `conversation_not_found`, as for any request to it.

If the first request fails before its reply starts (unknown conversation, store
down), its record is dropped, so a retry really retries. Keys are scoped per
API key (hashed together with the owner); without API keys they are global,
so clients must use unguessable keys (UUIDs), as they would anyway.
"""

from __future__ import annotations

import hashlib
import re
import time

import orjson
from starlette.requests import Request

from chatbot_sse import sse
from chatbot_sse.api.body import ChatRequest
from chatbot_sse.api.streaming import BytesSource, FrameSource, LogSource, hub_source
from chatbot_sse.domain import Message, MessageStatus, message_id_time
from chatbot_sse.errors import ConversationNotFound, IdempotencyInProgress, InvalidInput
from chatbot_sse.replies import ReplyHub
from chatbot_sse.stores.base import Store

KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
STARTING_SECONDS = 30.0
"""Longer than any first request takes to store its turn (a superseded reply is waited for
3 s, a store call times out after 5): a reply this old that left nothing behind, in a
conversation that does not exist, is not starting any more; its conversation was deleted."""


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key` (1-255 visible ASCII characters), None if absent."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not KEY_RE.fullmatch(value):
        raise InvalidInput(
            "Idempotency-Key must be 1-255 visible ASCII characters",
            code="invalid_idempotency_key",
        )
    return value


def scope_key(owner: str | None, key: str) -> str:
    """The store's key of an idempotency key: one namespace per owner."""
    return hashlib.sha256(f"{owner or ''}\n{key}".encode()).hexdigest()[:32]


def fingerprint(body: ChatRequest) -> str:
    """What "the same body" means: the same fields after parsing, whatever the media type."""
    return hashlib.sha256(orjson.dumps([body.message, body.conversation_id])).hexdigest()


async def replay(store: Store, hub: ReplyHub, ref: str, retry_ms: int) -> tuple[str, FrameSource]:
    """The conversation id and a source of the reply `ref` (`<conversation>:<reply>`), whole."""
    conversation_id, _, reply_id = ref.partition(":")
    live = hub.attach(reply_id)
    if live is not None:
        return conversation_id, hub_source(hub, live, 0)
    first = await store.read_events(conversation_id, reply_id, -1)
    if first.exists:
        return conversation_id, LogSource(store, conversation_id, reply_id, -1, first)
    for message in await store.history(conversation_id):
        if message.id == reply_id:
            return conversation_id, BytesSource(_rebuilt(message, conversation_id, retry_ms))
    made = message_id_time(reply_id)
    starting = made is None or time.time() - made <= STARTING_SECONDS
    if not starting and await store.get_conversation(conversation_id) is None:
        raise ConversationNotFound(
            f"conversation {conversation_id} of the first request with this"
            " Idempotency-Key was deleted"
        )
    raise IdempotencyInProgress("the first request with this Idempotency-Key is still starting")


def _rebuilt(message: Message, conversation_id: str, retry_ms: int) -> bytes:
    """A stored reply as a short stream: connected, one message, then how it ended."""
    rid = message.id
    base = {"conversation_id": conversation_id, "message_id": rid}
    frames = [
        sse.encode_event(
            "connected", f"{rid}:0", {"type": "connected", **base}, sse.retry_field(retry_ms)
        )
    ]
    if message.content:
        data = {"type": "message", "content": message.content, **base}
        frames.append(sse.encode_event("message", f"{rid}:1", data))
    reason = str(message.meta.get("finish_reason", "stop"))
    if message.status is MessageStatus.COMPLETE:
        tokens = len(message.content.split())
        usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
        end: dict[str, object] = {"type": "completed", "content": message.content, **base}
        end |= {"finish_reason": reason, "usage": usage}
        frames.append(sse.encode_event("completed", f"{rid}:2", end))
    else:
        error = {"code": reason, "message": "this reply did not complete", "retryable": True}
        frames.append(
            sse.encode_event("error", f"{rid}:2", {"type": "error", "error": error, **base})
        )
    return b"".join(frames)
