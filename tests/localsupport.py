"""The real local model in tests: skipped without the `local` extra, except in CI, where it fails.

CI installs the extra (`make test` depends on `make install-local`), so a missing
extra there is a broken build, not a reason to skip the real-model tests.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


def local_extra_missing() -> str | None:
    """Why the local engine can't run here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    from chatbot_sse.engines._local_model import default_model_path

    try:
        default_model_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def require_local_extra(*, module: bool = False) -> Path:
    """The default model's GGUF path; skip (or fail under CI) when the extra is missing.

    `module=True` at the top of a test module, before it imports the local engine.
    """
    reason = local_extra_missing()
    if reason is not None:
        message = f"the `local` extra is needed (make install-local): {reason}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=module)
    from chatbot_sse.engines._local_model import default_model_path

    return default_model_path()
