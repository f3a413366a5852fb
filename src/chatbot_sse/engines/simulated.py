"""The simulated engine: a deterministic, rule-based bot that streams like a language model.

It is the default engine, so the server, the web page and the load tests work
with no model at all. It really reads the context: it remembers the user's
name, what they like and where they live, recalls earlier messages, counts
turns, does safe arithmetic, tells stories and jokes, and otherwise answers
with templates that quote the message's topic words. The same context always
gets the same reply, in every process (see `_simulated_rules`).

Pacing imitates a model: `response_delay` seconds before the first chunk, then
`token_delay` seconds between chunks, each chunk a word with its leading
whitespace, so `"".join(chunks)` is exactly the reply. With both delays at 0 it
sleeps only every `YIELD_EVERY` chunks, to stay fast under load while still
letting other tasks run.

Triggers for fault testing of the server (the whole message, trimmed):

- `/simulate error`: yields `ERROR_AFTER_CHUNKS` chunks, then raises
  `EngineError("simulated engine failure")`, as an upstream failing mid-reply.
- `/simulate slow`: streams with ten times the token delay, leaving time to
  disconnect mid-reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from chatbot_sse.domain import Message, Role
from chatbot_sse.engines._simulated_rules import ERROR_TRIGGER, SLOW_TRIGGER, compose_reply
from chatbot_sse.engines.base import StreamResult
from chatbot_sse.errors import EngineError

if TYPE_CHECKING:
    from chatbot_sse.config import Settings

__all__ = [
    "ERROR_AFTER_CHUNKS",
    "ERROR_TRIGGER",
    "SLOW_FACTOR",
    "SLOW_TRIGGER",
    "YIELD_EVERY",
    "SimulatedEngine",
    "from_settings",
    "split_chunks",
]

ERROR_AFTER_CHUNKS = 3
SLOW_FACTOR = 10
YIELD_EVERY = 32  # chunks between `sleep(0)` when there is no delay to sleep

_CHUNK = re.compile(r"\s*\S+|\s+")


def split_chunks(reply: str) -> list[str]:
    """Leading-space word tokens, as LLM tokenizers make them: `"".join()` gives `reply` back."""
    return _CHUNK.findall(reply)


class SimulatedEngine:
    """A rule-based bot behind the Engine protocol; holds no resources and no state."""

    name = "simulated"

    def __init__(self, response_delay: float = 0.5, token_delay: float = 0.05) -> None:
        if response_delay < 0 or token_delay < 0:
            raise ValueError("delays must not be negative")
        self.response_delay = response_delay
        self.token_delay = token_delay

    def __repr__(self) -> str:
        return (
            f"SimulatedEngine(response_delay={self.response_delay!r}, "
            f"token_delay={self.token_delay!r})"
        )

    async def open(self) -> None:
        """Nothing to acquire: the bot is pure computation."""

    async def close(self) -> None:
        """Nothing to release."""

    async def health(self) -> dict[str, Any]:
        return {"name": self.name, "status": "ok"}

    async def stream(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[str, None]:
        """Yield the reply to the last user message of `context`, paced word by word.

        `result` gets "stop" and word counts for tokens, as a model server reports usage.
        """
        async with contextlib.aclosing(self.stream_batches(context, result)) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk

    async def stream_batches(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[list[str], None]:
        """`stream`, with the chunks that are ready together in one list (see `BatchingEngine`).

        Paced, every chunk is a batch of its own; with no delay, up to `YIELD_EVERY` go at
        once: the turn frames and publishes them in one call instead of a step each.
        """
        command = _last_user_text(context).strip()
        delay = self.token_delay * (SLOW_FACTOR if command == SLOW_TRIGGER else 1)
        fail_at = ERROR_AFTER_CHUNKS if command == ERROR_TRIGGER else -1
        chunks = split_chunks(compose_reply(context))
        if self.response_delay > 0:
            await asyncio.sleep(self.response_delay)
        if delay > 0:
            for index, chunk in enumerate(chunks):
                if index:
                    await asyncio.sleep(delay)
                if index == fail_at:
                    raise EngineError("simulated engine failure")
                yield [chunk]
        else:
            for start in range(0, len(chunks), YIELD_EVERY):
                if start:
                    await asyncio.sleep(0)
                end = start + YIELD_EVERY
                if start <= fail_at < end:
                    if fail_at > start:
                        yield chunks[start:fail_at]
                    raise EngineError("simulated engine failure")
                yield chunks[start:end]
        if result is not None:
            result.finish_reason = "stop"
            result.prompt_tokens = sum(len(message.content.split()) for message in context)
            result.completion_tokens = len(chunks)


def from_settings(settings: Settings) -> SimulatedEngine:
    """The registry's factory: pacing comes from RESPONSE_DELAY and TOKEN_DELAY."""
    return SimulatedEngine(settings.response_delay, settings.token_delay)


def _last_user_text(context: Sequence[Message]) -> str:
    for message in reversed(context):
        if message.role is Role.USER:
            return message.content
    return ""
