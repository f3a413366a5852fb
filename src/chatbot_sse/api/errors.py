"""The one place where errors become HTTP: a status and `{"error": {"code", "message"}}`.

Framework errors (unknown route, wrong method, FastAPI's own validation) are
mapped to the same shape, and anything unexpected becomes a 500 with a generic
message: a traceback never reaches a client.

`chat_error_response` is the mapping itself, also used where no exception
handler reaches (the access middleware) and by `/v1`, whose clients expect
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`. Either way a
`retry_after` becomes `Retry-After` and a 401 carries `WWW-Authenticate`.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from chatbot_sse.errors import ChatError, StoreUnavailable, Unauthorized
from chatbot_sse.observability.logging import get_logger

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "unavailable",
}


STREAM_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "API key missing or invalid (when API_KEYS is set)"},
    404: {"description": "Unknown conversation_id (or another API key's)"},
    413: {"description": "Body or message too large"},
    415: {"description": "Unsupported media type"},
    422: {"description": "Invalid input"},
    429: {"description": "Rate or concurrent-stream limit; see Retry-After"},
    503: {"description": "Store unavailable, or this server is at its stream limit"},
}
"""What an endpoint that starts a reply can answer before its stream starts (OpenAPI)."""


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def openai_error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def chat_error_response(exc: ChatError, *, openai: bool = False) -> JSONResponse:
    """The HTTP answer to `exc`: its status, its code, and the headers it calls for.

    A store failure is also logged (an operator must learn that the disk is full
    or Redis is down from the logs, not from users); the message names the
    backend's error, never a request's content.
    """
    if isinstance(exc, StoreUnavailable):
        log.error("store_unavailable", error=exc.message)
    headers: dict[str, str] = {}
    retry_after = exc.retry_after
    if retry_after is None and exc.status_code == 503:
        retry_after = 1
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.challenge
    if openai:
        return openai_error_response(exc.status_code, exc.code, exc.message, headers)
    return error_response(exc.status_code, exc.code, exc.message, headers)


async def _chat_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatError)
    return chat_error_response(exc)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, detail, dict(exc.headers or {}))


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message = "; ".join(_describe(e) for e in exc.errors()) or "invalid request"
    return error_response(422, "invalid_input", message)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to answer this request")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ChatError, _chat_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
