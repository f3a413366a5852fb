"""A pure ASGI middleware giving each request an id and counting its status.

Pure ASGI on purpose: it only wraps `send` to see the status line and passes
`receive` through untouched, so streamed bodies and `http.disconnect` flow as
if it were not there (unlike Starlette's `BaseHTTPMiddleware`).
"""

from __future__ import annotations

import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot_sse.observability.logging import REQUEST_ID
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.start_hook import StartHook

_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID_RE.match(value):
                request_id = value
                break
        if not request_id:
            request_id = secrets.token_hex(8).encode()
        bound = REQUEST_ID.set(request_id.decode())

        def add_id(message: Message) -> None:
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]

        hook = StartHook(send, add_id)
        try:
            await self.app(scope, receive, hook)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            status = 500 if hook.status is None else hook.status
            self.metrics.http_request(scope["method"], template, status)
            REQUEST_ID.reset(bound)
