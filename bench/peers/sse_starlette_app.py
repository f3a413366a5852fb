"""FastAPI + sse-starlette: the reply as a generator of dicts for `EventSourceResponse`.

Written the way its documentation shows: the message as a dependency, an async generator,
JSON serialised per event; sse-starlette adds pings and disconnect handling.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from sse_starlette import EventSourceResponse

from bench.peers._body import read_message
from bench.peers._reply import CONVERSATION_ID, RETRY_MS, events, pace

app = FastAPI()
PACE = pace()


async def _reply() -> AsyncIterator[dict[str, object]]:
    items = events()
    for index, (name, eid, data) in enumerate(items):
        if PACE and 1 < index < len(items) - 1:
            await asyncio.sleep(PACE)
        event: dict[str, object] = {
            "event": name,
            "id": eid,
            "data": json.dumps(data, separators=(",", ":")),
        }
        if index == 0:
            event["retry"] = RETRY_MS
        yield event


@app.post("/chat")
async def chat(message: Annotated[str, Depends(read_message)]) -> EventSourceResponse:
    return EventSourceResponse(
        _reply(),
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Conversation-Id": CONVERSATION_ID},
    )
