"""Lazy `"module:factory"` references: how engines and stores are registered.

Built-ins are registered exactly as a plugin would be, and imported only when
chosen, so the default server never pays for an HTTP client, a Redis driver or
llama.cpp bindings it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any


def load_factory(target: str, what: str) -> Any:
    """Import `target` ("module:attribute"); ValueError naming `what` if that fails.

    The error says which: a module that does not exist (yet), or one whose
    optional dependency is not installed.
    """
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ValueError(f"{what} is not available yet") from exc
        raise ValueError(f"{what} needs the package {exc.name!r}, which is not installed") from exc
    return getattr(module, attribute)
