"""chatbot-sse: a chat streaming server speaking Server-Sent Events.

The public surface is deliberately small: the app factory and the settings
object. They are imported lazily so that `chatbot_sse.domain` or the load-test
client can be used without pulling in the web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app"]

if TYPE_CHECKING:
    from chatbot_sse.config import Settings
    from chatbot_sse.main import create_app


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from chatbot_sse.config import Settings

        return Settings
    if name == "create_app":
        from chatbot_sse.main import create_app

        return create_app
    raise AttributeError(f"module 'chatbot_sse' has no attribute {name!r}")
