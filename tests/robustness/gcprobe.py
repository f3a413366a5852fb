"""The server with two test-only endpoints that ask its garbage collector what it had to free.

`POST /_gc/mark` collects, then switches automatic collection off and keeps
everything a later collection finds (`gc.DEBUG_SAVEALL`); `GET /_gc/report`
collects and answers, by type, the objects that only the collector could free
since the mark (reference cycles), then resumes normal collection;
`POST /_gc/cycle` drops a cycle on purpose, so a test can see the probe find
one; `GET /_gc/settings` answers the collector's thresholds and how many objects
start-up froze. Everything else goes to `chatbot_sse.main:app`, in this same process.
"""

from __future__ import annotations

import collections
import gc
from typing import Any

import orjson

from chatbot_sse.main import app as chatbot_app


async def _answer(send: Any, body: dict[str, Any]) -> None:
    start = {"type": "http.response.start", "status": 200}
    await send({**start, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope.get("path")
    if path == "/_gc/mark":
        gc.collect()
        gc.garbage.clear()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        await _answer(send, {"marked": True})
    elif path == "/_gc/cycle":
        loop: list[Any] = []
        loop.append(loop)
        del loop
        await _answer(send, {"made": True})
    elif path == "/_gc/settings":
        await _answer(send, {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()})
    elif path == "/_gc/report":
        gc.collect()
        counts = collections.Counter(type(obj).__qualname__ for obj in gc.garbage)
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
        await _answer(send, {"total": sum(counts.values()), "types": dict(counts.most_common())})
    else:
        await chatbot_app(scope, receive, send)
