"""chatbot-sse: a chat streaming server speaking Server-Sent Events.

The public surface is deliberately small: the app factory and the settings
object. Everything else is reachable through its module.
"""

from chatbot_sse.config import Settings
from chatbot_sse.main import create_app

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app"]
