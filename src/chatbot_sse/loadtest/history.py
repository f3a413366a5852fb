"""End-of-run check that the server kept every turn of every multi-turn conversation.

A streamed reply that looked perfect is still a failure if the server forgot
it: the next turn's context would be wrong. So each conversation's
`GET /conversations/{id}/history` must contain, in order, every turn that
completed: the user message, then the assistant reply with exactly the
streamed content. Other messages may sit in between (a system prompt, a
partial reply of a turn that was cut short, marked so); they are skipped.
A turn not found is re-marked failed with kind `history_mismatch`, so
`requests_completed + requests_failed` still adds up to the streams sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from chatbot_sse.loadtest.client import HISTORY_MISMATCH, StreamRecord
from chatbot_sse.loadtest.transport import Target

__all__ = ["SessionLog", "match_history", "verify_histories"]


@dataclass(slots=True)
class SessionLog:
    """What one virtual user sent and received, turn by turn."""

    session: int
    conversation_id: str | None = None
    turns: list[tuple[str, str | None, StreamRecord]] = field(default_factory=list)

    def add(self, message: str, reply: str | None, record: StreamRecord) -> None:
        self.turns.append((message, reply, record))
        if self.conversation_id is None and record.conversation_id:
            self.conversation_id = record.conversation_id


def match_history(
    turns: list[tuple[str, str | None, StreamRecord]], messages: list[dict[str, Any]]
) -> list[int]:
    """Indices of completed turns that the history lacks (greedy in-order matching)."""
    missing: list[int] = []
    pos = 0
    for i, (message, reply, _) in enumerate(turns):
        if reply is None:
            continue  # a failed turn: already counted, and the server may keep a partial
        found = -1
        for j in range(pos, len(messages) - 1):
            user, bot = messages[j], messages[j + 1]
            if (
                user.get("role") == "user"
                and user.get("content") == message
                and bot.get("role") == "assistant"
                and bot.get("content") == reply
            ):
                found = j
                break
        if found < 0:
            missing.append(i)
        else:
            pos = found + 2
    return missing


async def verify_histories(
    target: Target, headers: list[tuple[str, str]], sessions: list[SessionLog]
) -> tuple[int, int]:
    """Check every session's history; return (conversations checked, conversations mismatched)."""
    todo = [s for s in sessions if s.conversation_id and any(r for _, r, _ in s.turns)]
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=target.base_url, headers=headers, timeout=30.0) as http:

        async def check(log: SessionLog) -> bool:
            async with limit:
                try:
                    resp = await http.get(f"/conversations/{log.conversation_id}/history")
                    body = resp.json() if resp.status_code == 200 else None
                except (httpx.HTTPError, ValueError) as exc:
                    detail = f"history: {type(exc).__name__}: {exc}"
                    body = None
                else:
                    detail = f"history: HTTP {resp.status_code}"
            messages = body.get("messages") if isinstance(body, dict) else None
            if not isinstance(messages, list):
                missing = [i for i, (_, r, _) in enumerate(log.turns) if r is not None]
            else:
                missing = match_history(log.turns, messages)
                detail = "history lacks this turn (user message and reply, in order)"
            for i in missing:
                log.turns[i][2].fail(HISTORY_MISMATCH, detail)
            return bool(missing)

        results = await asyncio.gather(*(check(s) for s in todo))
    return len(todo), sum(results)
