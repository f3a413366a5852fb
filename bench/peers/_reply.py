"""The reply every peer streams: chatbot-sse's simulated answer to the benchmark message.

`MESSAGE` is what the load sends (`message=nice`); the simulated engine answers
it with these 20 chunks, so every server streams `connected`, 20 `message`
events and `completed`: 22 events. Ids have the lengths chatbot-sse's have
(32-hex conversation id, 28-hex message id) so the bytes on the wire match.
"""

from __future__ import annotations

import os
from typing import Any

MESSAGE = "nice"
CHUNKS: tuple[str, ...] = (
    "Got", " it.", " If", " you're", " not", " sure", " what", " to", " ask,", " try",
    ' "tell', " me", " a", ' story"', " or", ' "what', " is", " 12", " *", ' 7?".',
)  # fmt: skip
CONVERSATION_ID = "69abc8105f2c1cc0ff04914e1b8c8493"
MESSAGE_ID = "01a211e36edb4797b4cebbe46f3d"
REQUEST_ID = "f67c57cefc81bc3b"
RETRY_MS = 3000
USAGE = {"prompt_tokens": 1, "completion_tokens": len(CHUNKS), "total_tokens": 1 + len(CHUNKS)}


def pace() -> float:
    """Seconds between consecutive `message` chunks (`BENCH_PACE`, default 0)."""
    return float(os.environ.get("BENCH_PACE", "0") or 0)


def events() -> list[tuple[str, str, dict[str, Any]]]:
    """`(event, id, data)` for the whole reply, in order, as chatbot-sse emits them."""
    base = {"conversation_id": CONVERSATION_ID, "message_id": MESSAGE_ID}
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("connected", f"{MESSAGE_ID}:0", {"type": "connected", **base})
    ]
    for seq, chunk in enumerate(CHUNKS, start=1):
        out.append(
            ("message", f"{MESSAGE_ID}:{seq}", {"type": "message", "content": chunk, **base})
        )
    completed = {
        "type": "completed",
        "content": "".join(CHUNKS),
        **base,
        "finish_reason": "stop",
        "usage": USAGE,
    }
    out.append(("completed", f"{MESSAGE_ID}:{len(CHUNKS) + 1}", completed))
    return out
