"""The server's protocol tells a streaming response that its client left: no watcher task.

An ASGI app learns of a disconnect from `receive()` returning `http.disconnect`,
so a streaming response that must notice a client leaving while the engine is
silent keeps a task of its own waiting in `receive()` for its whole life. That
task, made, run to its wait and cancelled at the end, went through uvicorn's
`receive` and an `asyncio.Event`: 2 % of a whole reply's instructions on a real
server (27k of 1,342k, `bench.server_instructions`), and one more task per
reply in the start-up burst of a paced wave.

The server's protocol classes (`request_deadline`) know first: uvicorn hears of
a lost connection in `connection_lost`. They give each connection a
`ConnectionNotice` and put it in every request's scope as the ASGI extension
`DISCONNECT_NOTICE`; a response that finds it registers a callback instead of
starting a watcher. Anywhere else (another server, an in-process client, a
request pipelined behind another that the notice missed) the extension is
absent and the response keeps its watcher.

One notice per connection, one callback at a time: uvicorn runs a connection's
requests one after the other. The notice fires for the response in progress even
when a request pipelined behind it already replaced uvicorn's current cycle,
whose own `disconnected` flag is all uvicorn would set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatbot_sse.body_chunks import BODY_CHUNKS

__all__ = ["DISCONNECT_NOTICE", "ConnectionNotice", "offer"]

DISCONNECT_NOTICE = "chatbot_sse.disconnect_notice"
"""The scope's `extensions` key under which a request finds its connection's notice."""


class ConnectionNotice:
    """Calls the registered callback, once, when its connection is lost."""

    __slots__ = ("_callback", "_flow", "lost", "offered_to")

    def __init__(self, flow: Any) -> None:
        self._flow = flow  # uvicorn's FlowControl of the connection: it knows if reading paused
        self._callback: Callable[[], None] | None = None
        self.lost = False
        self.offered_to: object = None  # the request cycle whose scope has it, last

    def register(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` when the client leaves (at once if it already has); None: no more.

        Registering resumes reading, as uvicorn's `receive()` does before it waits: the end
        of a large body may have paused it, and a paused connection never sees its EOF.
        """
        if callback is None:
            self._callback = None
        elif self.lost:
            callback()
        else:
            self._callback = callback
            self._flow.resume_reading()

    def connection_lost(self) -> None:
        self.lost = True
        self.offered_to = None
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def offer(protocol: Any, notice: ConnectionNotice, chunks: Callable[[Any], object]) -> None:
    """Put `notice`, and a `chunks` of the cycle, in the scope of the protocol's current
    request cycle, if it is new.

    Called where uvicorn makes cycles (httptools: `on_headers_complete`; h11:
    `data_received` and `on_response_complete`), after it: the cycle's app task is made
    but has not run yet, so the app finds the notice from its first step. `chunks` makes
    the cycle's `body_chunks.BodyChunks`, which comes along: the same moment suits it.
    """
    cycle = protocol.cycle
    if cycle is None or cycle is notice.offered_to:
        return
    notice.offered_to = cycle
    extensions = cycle.scope.get("extensions")
    if extensions is None:
        extensions = cycle.scope["extensions"] = {}
    extensions[DISCONNECT_NOTICE] = notice
    extensions[BODY_CHUNKS] = chunks(cycle)
