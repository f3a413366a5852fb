"""`StartHook`: middlewares that change only the start of a response, and what `unwrap` may skip."""

from __future__ import annotations

import functools
from typing import Any

from chatbot_sse.start_hook import StartHook, unwrap


async def test_the_hook_changes_the_start_only_and_passes_everything_on() -> None:
    sent: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    def add_header(message: dict[str, Any]) -> None:
        message["headers"] = [*message.get("headers", ()), (b"x-added", b"1")]

    hook = StartHook(server_send, add_header)
    assert hook.status is None
    await hook({"type": "http.response.start", "status": 201, "headers": []})
    await hook({"type": "http.response.body", "body": b"a\n\n", "more_body": True})
    assert hook.status == 201
    assert sent[0]["headers"] == [(b"x-added", b"1")]
    assert sent[1] == {"type": "http.response.body", "body": b"a\n\n", "more_body": True}


async def test_unwrap_goes_through_hooks_only() -> None:
    async def server_send(message: dict[str, Any]) -> None:
        """The server's own."""

    inner = StartHook(server_send, lambda message: None)
    outer = StartHook(inner, lambda message: None)
    assert unwrap(outer) is server_send
    foreign = functools.partial(outer)  # a wrapper we know nothing of (Starlette's CORS)
    assert unwrap(foreign) is foreign
    assert unwrap(StartHook(foreign, lambda message: None)) is foreign
