"""`HEAD` wherever `GET` answers a document: health checks and caches ask with it.

HTTP requires `HEAD` wherever `GET` works, and load balancers' and uptime
monitors' probes of `/health` often use it. FastAPI's `GET` routes do not take
it (Starlette's own routes do). Each document route gets a twin taking `HEAD`,
left out of the OpenAPI schema, whose response the server sends without its
body (uvicorn drops a `HEAD` response's body). Event streams get none: a
`HEAD` that held a follow of a reply open until it ends would be no answer.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from chatbot_sse.api.streaming import EventStreamResponse


def allow_head(router: APIRouter) -> APIRouter:
    """Give every `GET` route of `router` but the event streams a `HEAD` twin (once: a router
    included in several apps keeps its twins); returns the router, to include."""
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    has_head = {route.path for route in routes if "HEAD" in (route.methods or ())}
    for route in routes:
        if "GET" not in (route.methods or ()) or route.path in has_head:
            continue
        if route.response_class is EventStreamResponse:
            continue
        router.add_api_route(
            route.path.removeprefix(router.prefix),  # the router prefixes it again
            route.endpoint,
            methods=["HEAD"],
            response_class=route.response_class,
            include_in_schema=False,
            name=f"{route.name}_head",
        )
    return router
