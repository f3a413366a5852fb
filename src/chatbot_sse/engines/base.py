"""The Engine protocol: whatever turns a conversation's context into reply text.

Engines never see HTTP. They yield text chunks whose concatenation is the whole
reply; the turn service frames them as events. Cancellation (client gone,
shutdown) arrives as `asyncio.CancelledError` at an `await` and must release
whatever the engine holds (an upstream request, say).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol, runtime_checkable

from chatbot_sse.domain import Message


@runtime_checkable
class Engine(Protocol):
    name: str

    async def open(self) -> None:
        """Acquire resources (HTTP pools, model weights). Called in the lifespan."""

    async def close(self) -> None:
        """Release them."""

    async def health(self) -> dict[str, Any]:
        """A small JSON-able state report for `/health`; must not raise."""

    def stream(self, context: Sequence[Message]) -> AsyncGenerator[str, None]:
        """Yield the reply to the last user message of `context`, chunk by chunk.

        Raise `chatbot_sse.errors.EngineError` (or a subclass) on failure. An async
        generator, so the turn can `aclose()` it at once when the reply is cut
        short while the engine is suspended between chunks.
        """
