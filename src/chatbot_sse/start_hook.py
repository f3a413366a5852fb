"""A `send` wrapper for middlewares that only touch the start of a response.

Our middlewares (request id, security headers) change `http.response.start`
and pass every other message on as it is. Written as closures, each wrapped
every `send` of a response in one more coroutine: an SSE stream sends once
per batch of events, and a paced reply's every chunk went through two of them
on its way to the socket. As a `StartHook`, a wrapper says what it is, and a
response that has started may `unwrap` it and send its body straight to the
server. Any other wrapper (Starlette's CORS, a test's) stops the unwrapping,
so nothing is skipped that could still change a message.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Send


class StartHook:
    """Calls `on_start` on the `http.response.start` message (which it may change), then
    passes every message to `inner`. `status` is the status that started the response."""

    __slots__ = ("inner", "on_start", "status")

    def __init__(self, inner: Send, on_start: Callable[[Message], None]) -> None:
        self.inner = inner
        self.on_start = on_start
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.on_start(message)
        await self.inner(message)


def unwrap(send: Send) -> Send:
    """The send under every `StartHook`: for the body of a response that has started."""
    while isinstance(send, StartHook):
        send = send.inner
    return send
