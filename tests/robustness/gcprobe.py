"""The server with test-only endpoints that ask its garbage collector what it had to free.

`POST /_gc/mark` collects, then switches automatic collection off and keeps
everything a later collection finds (`gc.DEBUG_SAVEALL`); `GET /_gc/report`
collects and answers, by type, the objects that only the collector could free
since the mark (reference cycles), with the functions of the frames and the
exceptions among them, then resumes normal collection;
`POST /_gc/cycle` drops a cycle on purpose, so a test can see the probe find
one (`POST /_gc/exception_cycle` one through an exception's traceback);
`GET /_gc/settings` answers the collector's thresholds and how many objects
start-up froze. Everything else goes to `chatbot_sse.main:app`, in this same process.
"""

from __future__ import annotations

import collections
import gc
import types
from typing import Any

import orjson

from chatbot_sse.main import app as chatbot_app


async def _answer(send: Any, body: dict[str, Any]) -> None:
    start = {"type": "http.response.start", "status": 200}
    await send({**start, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


def _keep_own_traceback() -> None:
    """The cycle a handler makes by keeping its exception: frame -> exception -> traceback
    -> frame."""
    try:
        raise ValueError("kept")
    except ValueError as exc:
        kept = exc
    assert kept is not None


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
    elif path == "/_gc/exception_cycle":
        _keep_own_traceback()
        await _answer(send, {"made": True})
    elif path == "/_gc/settings":
        await _answer(send, {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()})
    elif path == "/_gc/report":
        gc.collect()
        counts = collections.Counter(type(obj).__qualname__ for obj in gc.garbage)
        # Where a cycle came from, should one turn up: the functions of its frames and the
        # exceptions in it (a caught exception kept by its own traceback's frame is the
        # usual culprit).
        frames = collections.Counter(
            f"{obj.f_code.co_filename.rsplit('/', 2)[-1]}:{obj.f_code.co_qualname}"
            for obj in gc.garbage
            if isinstance(obj, types.FrameType)
        )
        errors = collections.Counter(
            type(obj).__qualname__ for obj in gc.garbage if isinstance(obj, BaseException)
        )
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
        await _answer(
            send,
            {
                "total": sum(counts.values()),
                "types": dict(counts.most_common()),
                "frames": dict(frames.most_common()),
                "exceptions": dict(errors.most_common()),
            },
        )
    else:
        await chatbot_app(scope, receive, send)
