"""A load tester for SSE chat endpoints that checks every reply and times what users feel.

Layers, each a module: `parser` (SSE bytes to events), `transport` (raw
HTTP/1.1 on asyncio), `client` (one turn: checks and timings), `runner`
(scheduling, sessions), `history` (did the server keep every turn),
`report` (aggregates, JSON, table), `plot` (PNG), `cli` (options).
"""

from __future__ import annotations

from chatbot_sse.loadtest.client import StreamOptions, StreamRecord
from chatbot_sse.loadtest.parser import Event, SSEParser
from chatbot_sse.loadtest.report import summarize
from chatbot_sse.loadtest.runner import Run, RunConfig, RunResult

__all__ = [
    "Event",
    "Run",
    "RunConfig",
    "RunResult",
    "SSEParser",
    "StreamOptions",
    "StreamRecord",
    "summarize",
]
