"""Engines by name: `create_engine(settings)` builds the one `ENGINE` names.

Built-in engines are registered exactly as a plugin would be, as a
`"module:factory"` string, and imported only when chosen: the simulated engine
must not pay for an HTTP client or llama.cpp bindings it never uses. A factory
takes the `Settings` and returns an `Engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from chatbot_sse.engines.base import Engine
from chatbot_sse.plugins import load_factory

if TYPE_CHECKING:
    from chatbot_sse.config import Settings

__all__ = ["BUILTIN_ENGINES", "Engine", "create_engine"]

BUILTIN_ENGINES: Mapping[str, str] = {
    "simulated": "chatbot_sse.engines.simulated:from_settings",
    "openai": "chatbot_sse.engines.openai:from_settings",
    "local": "chatbot_sse.engines.local:from_settings",
}


def create_engine(settings: Settings, registry: Mapping[str, str] = BUILTIN_ENGINES) -> Engine:
    """Build the engine `settings.engine` names; ValueError if it is unknown or not installed.

    The error says which: an engine whose module doesn't exist (yet), or one
    whose optional dependency is missing. Either way the server refuses to
    start rather than failing on the first chat.
    """
    name = settings.engine
    try:
        target = registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown engine {name!r}; choose one of: {known}") from None
    try:
        loaded = load_factory(target, f"engine {name!r}")
    except ValueError as exc:
        if name in _EXTRAS and "not installed" in str(exc):
            extra = _EXTRAS[name]
            raise ValueError(
                f"{exc}: make install-{extra}, or pip install 'chatbot-sse[{extra}]'"
            ) from exc
        raise
    factory = cast("Callable[[Settings], Engine]", loaded)
    return factory(settings)


_EXTRAS: Mapping[str, str] = {"local": "local"}
"""Built-in engines whose dependencies are an optional extra (and its make target)."""
