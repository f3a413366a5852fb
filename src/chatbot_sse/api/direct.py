"""Hot routes served without FastAPI's per-request machinery.

`POST /chat` starts every reply, so what it costs before the first byte is
paid per reply. FastAPI's request path (its telemetry check, which reads the
environment on every request, the body-size and exception middlewares, route
matching over every route, dependency solving, an exit stack) cost about a
fifth of a whole simulated reply under load (py-spy, docs/bench.md). A *direct
route* skips all of that and keeps what the route means:

- the same endpoint function (it stays registered with FastAPI, which still
  documents it in OpenAPI and serves it to anything bypassing this dispatch);
- the same user middlewares around it (request id and metrics, security
  headers, CORS, access control), built from `app.user_middleware`;
- the same error mapping: a `ChatError` through `chat_error_response`,
  anything unexpected a logged 500 with the generic JSON body.

Only an exact method and path match is dispatched here; everything else,
`OPTIONS` preflights included, goes the ordinary way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatbot_sse.api.errors import chat_error_response, error_response
from chatbot_sse.errors import ChatError
from chatbot_sse.observability.logging import get_logger

log = get_logger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoute:
    """One endpoint as a bare ASGI app, with the app's error mapping."""

    def __init__(self, endpoint: Endpoint, route: BaseRoute) -> None:
        self.endpoint = endpoint
        self.route = route  # in the scope, as routing leaves it: metrics label by its path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        try:
            response = await self.endpoint(Request(scope, receive))
        except ChatError as exc:
            response = chat_error_response(exc)
        except Exception as exc:
            log.error("unhandled_error", path=scope["path"], exc_info=exc)
            response = error_response(
                500, "internal_error", "the server failed to answer this request"
            )
        await response(scope, receive, send)


class ChatbotApp(FastAPI):
    """FastAPI, plus direct dispatch of the routes registered with `direct()`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct_routes: dict[tuple[str, str], Route] = {}
        self._direct_stacks: dict[tuple[str, str], ASGIApp] = {}

    def direct(self, router: APIRouter, method: str, path: str) -> None:
        """Serve `method path` of `router` (included, without a prefix) directly."""
        for route in router.routes:
            if isinstance(route, Route) and route.path == path and method in (route.methods or ()):
                self._direct_routes[method, path] = route
                self.middleware_stack = None  # rebuilt, with this route, on the next request
                return
        raise LookupError(f"no route {method} {path} to serve directly")

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        self._direct_stacks = {}
        for key, route in self._direct_routes.items():
            app: ASGIApp = DirectRoute(route.endpoint, route)
            for middleware in reversed(self.user_middleware):
                app = middleware.cls(app, *middleware.args, **middleware.kwargs)
            self._direct_stacks[key] = app
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path:
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            direct = self._direct_stacks.get((scope["method"], scope["path"]))
            if direct is not None:
                scope["app"] = self
                await direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
