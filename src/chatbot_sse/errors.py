"""One exception hierarchy, each error carrying a stable `code` clients can branch on.

    ChatError                         code            HTTP  retryable
    ├── Unauthorized                  unauthorized     401  no   (+ WWW-Authenticate)
    ├── IncompleteBody                incomplete_body  400  no
    ├── InvalidInput                  invalid_input    422  no
    │   └── InvalidConversationId     invalid_conversation_id
    ├── PayloadTooLarge               payload_too_large 413 no
    ├── UnsupportedMediaType          unsupported_media_type 415 no
    ├── NotFound                      not_found        404  no
    │   └── ConversationNotFound      conversation_not_found (also: another key's)
    ├── Conflict                      conflict         409  no
    │   ├── IdempotencyKeyReused      idempotency_key_reused   same key, another body
    │   └── IdempotencyInProgress     idempotency_in_progress  yes (+ Retry-After)
    ├── LimitExceeded                 limit_exceeded   429  yes  (+ Retry-After)
    │   ├── RateLimited               rate_limited     requests per minute per key/IP
    │   └── TooManyStreams            too_many_streams concurrent streams per key/IP
    ├── ServerBusy                    server_busy      503  yes  (+ Retry-After) streams per worker
    ├── StoreUnavailable              store_unavailable 503 yes
    └── EngineError                   engine_error     502  yes
        ├── EngineTimeout             engine_timeout   504  yes
        │   └── UpstreamTimeout       upstream_timeout 504  yes (connect, first token, idle)
        ├── EngineBusy                engine_busy      503  yes (with Retry-After)
        └── UpstreamError             upstream_error   502  429/5xx/unreachable yes, other 4xx no
            └── UpstreamProtocolError upstream_protocol_error 502 closed early yes, garbage no

Codes that only ever end a stream (`event: error`), never an HTTP answer:
`interrupted`, `cancelled`, `shutdown` and `stream_timeout` (the reply ran
longer than `MAX_STREAM_SECONDS`), the reasons a generation is cancelled.

`retry_after` (seconds), where set, becomes the `Retry-After` header.

The `Upstream*` errors come from `ENGINE=openai`: the model server behind us
failed, not this server. `retryable` is set per instance where it depends on
what the upstream did. `EngineBusy` comes from `ENGINE=local` when its queue is full.

Errors are translated in exactly one place (`api.errors`): into an HTTP status
and JSON body before a stream starts, into an `event: error` after it has.
"""

from __future__ import annotations


class ChatError(Exception):
    code: str = "internal_error"
    status_code: int = 500
    retryable: bool = False
    retry_after: float | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Unauthorized(ChatError):
    """No API key, or one that is not configured (`API_KEYS`). Never says which key."""

    code = "unauthorized"
    status_code = 401

    def __init__(self, message: str, *, key_given: bool = False) -> None:
        super().__init__(message)
        self.challenge = 'Bearer realm="chatbot-sse"' + (
            ', error="invalid_token"' if key_given else ""
        )


class IncompleteBody(ChatError):
    """The client went away (or stopped sending) before its body was complete."""

    code = "incomplete_body"
    status_code = 400


class InvalidInput(ChatError):
    code = "invalid_input"
    status_code = 422


class InvalidConversationId(InvalidInput):
    code = "invalid_conversation_id"


class PayloadTooLarge(ChatError):
    code = "payload_too_large"
    status_code = 413


class UnsupportedMediaType(ChatError):
    code = "unsupported_media_type"
    status_code = 415


class NotFound(ChatError):
    code = "not_found"
    status_code = 404


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class Conflict(ChatError):
    code = "conflict"
    status_code = 409


class IdempotencyKeyReused(Conflict):
    """The `Idempotency-Key` was used before with another body."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    """The first request with this `Idempotency-Key` has not started its reply yet."""

    code = "idempotency_in_progress"
    retryable = True
    retry_after = 1.0


class TurnInProgress(Conflict):
    """The conversation's latest reply is still being generated (`Store.begin_turn`).

    `POST /chat` supersedes it first (see `ReplyHub.supersede`); a 409 reaches the
    client only when that reply could not be ended in time.
    """

    code = "turn_in_progress"
    retryable = True
    retry_after = 1.0

    def __init__(self, conversation_id: str, reply_id: str) -> None:
        super().__init__(f"conversation {conversation_id} is still generating its reply {reply_id}")
        self.conversation_id = conversation_id
        self.reply_id = reply_id


class LimitExceeded(ChatError):
    """A per-client limit; `retry_after` says when trying again can succeed."""

    code = "limit_exceeded"
    status_code = 429
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(LimitExceeded):
    code = "rate_limited"


class TooManyStreams(LimitExceeded):
    code = "too_many_streams"


class ServerBusy(ChatError):
    """This worker holds as many streams as it is allowed (`MAX_STREAMS_PER_WORKER`)."""

    code = "server_busy"
    status_code = 503
    retryable = True
    retry_after = 2.0


class StoreUnavailable(ChatError):
    code = "store_unavailable"
    status_code = 503
    retryable = True


class EngineError(ChatError):
    code = "engine_error"
    status_code = 502
    retryable = True


class EngineTimeout(EngineError):
    code = "engine_timeout"
    status_code = 504


class UpstreamTimeout(EngineTimeout):
    """The upstream model server did not connect, start or continue its reply in time."""

    code = "upstream_timeout"


class UpstreamError(EngineError):
    """The upstream model server answered with an error status, or could not be reached."""

    code = "upstream_error"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class UpstreamProtocolError(UpstreamError):
    """The upstream's reply was not a well-formed chat-completions stream, or ended early."""

    code = "upstream_protocol_error"


class EngineBusy(EngineError):
    """The engine's queue is full (`ENGINE=local`): try again after `retry_after` seconds."""

    code = "engine_busy"
    status_code = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1.0, retry_after)
