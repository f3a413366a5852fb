"""Security headers on every response, as a pure ASGI middleware.

Set only where the response did not set its own (the page sets its own CSP):
`X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (no framing, so no
clickjacking), `Referrer-Policy: no-referrer`, and `Cache-Control: no-store` on
JSON answers, which may hold a conversation. Wrapping `send` for the start
message only, it leaves streamed bodies and `http.disconnect` alone.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot_sse.start_hook import StartHook

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    """Not a coroutine function: it returns the inner app's awaitable, so it adds no frame to
    the chain of coroutines that every wake-up of a streaming response resumes (a paced
    reply's response wakes once per chunk)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.app(scope, receive, StartHook(send, _add_security_headers))


def _add_security_headers(message: Message) -> None:
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    for name, value in SECURITY_HEADERS:
        if name not in present:
            headers.append((name, value))
    if b"cache-control" not in present and (b"content-type", b"application/json") in headers:
        headers.append((b"cache-control", b"no-store"))
    message["headers"] = headers
