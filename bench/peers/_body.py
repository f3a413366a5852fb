"""The framework peers' request parsing: `message` from a form or a JSON body.

chatbot-sse accepts both; wrk sends a form and `chatbot-sse loadtest` JSON.
A FastAPI dependency, so a bad body is a 422 before the stream starts.
"""

from __future__ import annotations

from fastapi import HTTPException, Request


async def read_message(request: Request) -> str:
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.json()
        message = body.get("message") if isinstance(body, dict) else None
    else:
        message = (await request.form()).get("message")
    if not isinstance(message, str) or not message.strip():
        raise HTTPException(422, "message is required")
    return message
