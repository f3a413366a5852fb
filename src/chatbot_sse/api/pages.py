"""`GET /`: the web chat page (a placeholder until the web client lands)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chatbot-sse</title></head>
<body><h1>chatbot-sse</h1>
<p>POST a <code>message</code> to <code>/chat</code> to get a streamed reply.
See <a href="/docs">the API docs</a>.</p></body></html>
"""


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(
        _PAGE,
        headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'self'; object-src 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )
