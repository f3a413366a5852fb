"""Stores by URL scheme: `create_store(url)` builds the backend `STORE_URL` names.

Built-in backends are registered as `"module:factory"` strings, like engines,
and imported only when chosen: a SQLite deployment never imports a Redis
client. A factory takes the whole URL and the keyword options `event_retention`
and `conversation_ttl`, and returns an unopened `Store`; nothing connects until
`open()`, which the lifespan calls after gunicorn has forked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from chatbot_sse.plugins import load_factory
from chatbot_sse.stores.base import Store

__all__ = ["BUILTIN_STORES", "Store", "create_store"]

BUILTIN_STORES: Mapping[str, str] = {
    "sqlite": "chatbot_sse.stores.sqlite:from_url",
    "memory": "chatbot_sse.stores.memory:from_url",
    "redis": "chatbot_sse.stores.redis:from_url",
    "rediss": "chatbot_sse.stores.redis:from_url",
}


def create_store(
    url: str,
    registry: Mapping[str, str] = BUILTIN_STORES,
    *,
    event_retention: float = 300.0,
    conversation_ttl: float = 0.0,
) -> Store:
    """Build the (unopened) store `url` names; ValueError if it is unknown, malformed or missing.

    The error says which: an unknown scheme, a backend whose module doesn't
    exist (yet), one whose optional dependency is not installed, or an option
    the backend can't honour (`conversation_ttl` > 0 needs Redis). Either way
    the server refuses to start rather than failing on the first chat.

    `event_retention`: seconds a finished reply's events stay replayable.
    `conversation_ttl`: seconds after its last write a conversation expires; 0 keeps it.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in registry:
        known = ", ".join(f"{name}://" for name in sorted(registry))
        raise ValueError(f"unsupported store URL {url!r}; use one of: {known}")
    factory = cast(
        "Callable[..., Store]", load_factory(registry[scheme], f"store backend {scheme!r}")
    )
    return factory(url, event_retention=event_retention, conversation_ttl=conversation_ttl)
