"""The floor: a raw ASGI app sending chatbot-sse's exact bytes, pre-encoded at import.

No framework, no routing, no JSON at request time: it reads the body (form or JSON),
sends the same headers chatbot-sse sends, then one `http.response.body` per
event, as a streaming server must. Whatever chatbot-sse spends beyond this is
the cost of its features (store, metrics, logging, validation, framework).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from bench.peers._reply import CONVERSATION_ID, REQUEST_ID, RETRY_MS, events, pace

FRAMES: tuple[bytes, ...] = tuple(
    (b"retry: %d\n" % RETRY_MS if index == 0 else b"")
    + b"event: %s\nid: %s\ndata: %s\n\n" % (name.encode(), eid.encode(), orjson.dumps(data))
    for index, (name, eid, data) in enumerate(events())
)
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-conversation-id", CONVERSATION_ID.encode()),
    (b"x-request-id", REQUEST_ID.encode()),
]
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
BAD = {
    "type": "http.response.start",
    "status": 422,
    "headers": [(b"content-type", b"application/json")],
}
PACE = pace()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"]
            if event == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] != "POST" or b"message" not in body:  # a form or a JSON body
        await send(BAD)
        await send({"type": "http.response.body", "body": b'{"error":{"code":"invalid"}}'})
        return
    await send(START)
    last = len(FRAMES) - 1
    for index, frame in enumerate(FRAMES):
        if PACE and 1 < index < last:
            await asyncio.sleep(PACE)
        await send({"type": "http.response.body", "body": frame, "more_body": index < last})
