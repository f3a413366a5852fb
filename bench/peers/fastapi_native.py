"""FastAPI's native SSE (`fastapi.sse`, FastAPI >= 0.13x): a generator of `ServerSentEvent`.

`response_class=EventSourceResponse` on a path operation that yields
`ServerSentEvent(data=...)`: FastAPI validates each event model, serialises
`data` through `jsonable_encoder` + `json.dumps`, and relays the frames
through two memory streams (producer, keep-alive inserter) to a
`StreamingResponse`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import Depends, FastAPI, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from bench.peers._body import read_message
from bench.peers._reply import CONVERSATION_ID, RETRY_MS, events, pace

app = FastAPI()
PACE = pace()


def _conversation_header(response: Response) -> None:
    response.headers["X-Conversation-Id"] = CONVERSATION_ID


@app.post("/chat", response_class=EventSourceResponse, dependencies=[Depends(_conversation_header)])
async def chat(message: Annotated[str, Depends(read_message)]) -> AsyncIterable[ServerSentEvent]:
    items = events()
    for index, (name, eid, data) in enumerate(items):
        if PACE and 1 < index < len(items) - 1:
            await asyncio.sleep(PACE)
        yield ServerSentEvent(event=name, id=eid, data=data, retry=RETRY_MS if index == 0 else None)
