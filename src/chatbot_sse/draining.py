"""Draining a worker on SIGTERM: notice it early, then hand the streams off.

uvicorn handles SIGTERM by closing its listeners and waiting (up to its
graceful timeout) for connections to close; only then does the lifespan's
shutdown run. That is too late to say anything to the clients, so
`on_sigterm` chains a callback onto the server's own SIGTERM handler: the
`ReplyHub` starts draining at once (`/health` 503 `draining`) and, after
`DRAIN_SECONDS`, fires its `Handoff`: every stream still open gets a
`reconnect` event with a jittered `retry:` and ends, and what is still being
generated is cancelled with reason `shutdown` (the partial reply is stored,
the log ends with the `error` event `shutdown`), well before uvicorn's or
gunicorn's own deadline.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType


def _nothing() -> None:
    """Nothing to undo."""


def on_sigterm(callback: Callable[[], None]) -> Callable[[], None]:
    """Also run `callback` (in the event loop) when the server's SIGTERM handler runs.

    Installs nothing unless a Python handler is already there to chain onto
    (uvicorn's, also under gunicorn): an app served in-process keeps the
    default. Returns the function that puts the previous handler back.
    """
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return _nothing
    loop = asyncio.get_running_loop()

    def handler(sig: int, frame: FrameType | None) -> None:
        previous(sig, frame)
        loop.call_soon_threadsafe(callback)

    signal.signal(signal.SIGTERM, handler)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)

    return undo


class Handoff:
    """Streams to end with a `reconnect` event once their worker gives up on them."""

    def __init__(self) -> None:
        self.fired = False
        self._callbacks: set[Callable[[], None]] = set()

    def register(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` at the handoff (at once if it happened); returns the unregister."""
        if self.fired:
            callback()
            return _nothing
        self._callbacks.add(callback)
        return lambda: self._callbacks.discard(callback)

    def fire(self) -> None:
        self.fired = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()
