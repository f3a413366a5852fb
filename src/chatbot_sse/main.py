"""The ASGI application: `create_app(settings)` wires the parts; `app` is the default.

Wiring only. Shared objects (store, engine, turn service) are created in the
lifespan, inside each worker; `app` here builds nothing but the settings and
the route table, so importing it before a fork is safe.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware

from chatbot_sse import __version__
from chatbot_sse.api import chat, conversations, health, openai_compat, pages, resume
from chatbot_sse.api.access import AccessMiddleware, ApiKeys
from chatbot_sse.api.direct import ChatbotApp
from chatbot_sse.api.errors import install_error_handlers
from chatbot_sse.api.head import allow_head
from chatbot_sse.api.headers import SecurityHeadersMiddleware
from chatbot_sse.config import Settings, load_settings
from chatbot_sse.lifespan import make_lifespan
from chatbot_sse.observability.asgi import RequestContextMiddleware
from chatbot_sse.observability.logging import configure_logging
from chatbot_sse.observability.metrics import Metrics


def create_app(settings: Settings | None = None) -> ChatbotApp:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.debug)
    metrics = Metrics(settings.prometheus_multiproc_dir)
    app = ChatbotApp(
        title="chatbot-sse",
        version=__version__,
        description="A chat server that streams replies as Server-Sent Events.",
        lifespan=make_lifespan(settings, metrics),
        debug=False,  # never render tracebacks into responses, even in DEBUG
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(allow_head(conversations.router))
    app.include_router(resume.router)
    app.include_router(allow_head(health.router))
    app.include_router(allow_head(pages.router))
    app.include_router(allow_head(openai_compat.router))
    app.direct(
        chat.router, "POST", "/chat"
    )  # every reply starts here: skip FastAPI's per-request work
    # Outermost last. All pure ASGI: none of them may buffer a stream or hide a disconnect.
    keys = ApiKeys(settings.api_key_list())
    app.add_middleware(
        AccessMiddleware, keys=keys, rate_limit=settings.rate_limit_per_minute, metrics=metrics
    )
    if origins := settings.cors_origin_list():
        # Outside access control: a preflight carries no key, and a 401 needs CORS headers to be read.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            allow_credentials=False,  # keys travel in headers, never in cookies
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


CORS_ALLOW_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Idempotency-Key",
    "Last-Event-ID",
    "Content-Type",
]
CORS_EXPOSE_HEADERS = ["X-Conversation-Id", "X-Request-Id", "Retry-After", "Idempotent-Replayed"]


app = create_app(load_settings())
