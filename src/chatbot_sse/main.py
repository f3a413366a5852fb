"""The ASGI application: `create_app(settings)` wires the parts; `app` is the default.

Wiring only. Shared objects (store, engine, turn service) are created in the
lifespan, inside each worker; `app` here builds nothing but the settings and
the route table, so importing it before a fork is safe.
"""

from __future__ import annotations

from fastapi import FastAPI

from chatbot_sse import __version__
from chatbot_sse.api import chat, conversations, health, openai_compat, pages, resume
from chatbot_sse.api.errors import install_error_handlers
from chatbot_sse.config import Settings
from chatbot_sse.lifespan import make_lifespan
from chatbot_sse.observability.asgi import RequestContextMiddleware
from chatbot_sse.observability.logging import configure_logging
from chatbot_sse.observability.metrics import Metrics


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.debug)
    metrics = Metrics(settings.prometheus_multiproc_dir)
    app = FastAPI(
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
    app.include_router(conversations.router)
    app.include_router(resume.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    app.include_router(openai_compat.router)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


app = create_app()
