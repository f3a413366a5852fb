"""The Engine protocol: whatever turns a conversation's context into reply text.

Engines never see HTTP. They yield text chunks whose concatenation is the whole
reply; the turn service frames them as events. Cancellation (client gone,
shutdown) arrives as `asyncio.CancelledError` at an `await` and must release
whatever the engine holds (an upstream request, say).

An engine that knows more than the text (a real model's finish reason and
token counts) accepts an optional `result: StreamResult` and fills it before
its generator ends; the turn puts it into `completed` and falls back to its own
estimate for whatever is left `None`. Engines without the parameter still work:
`open_stream()` passes it only to engines whose `stream` accepts it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from chatbot_sse.domain import Message


@dataclass(slots=True)
class StreamResult:
    """What an engine learnt about the reply it streamed; `None` means "not known"."""

    finish_reason: str | None = None  # "stop", "length", "content_filter", ...
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    dropped_messages: int | None = None  # oldest context messages left out to fit the window


@runtime_checkable
class Engine(Protocol):
    name: str

    async def open(self) -> None:
        """Acquire resources (HTTP pools, model weights). Called in the lifespan."""

    async def close(self) -> None:
        """Release them."""

    async def health(self) -> dict[str, Any]:
        """A small JSON-able state report for `/health`; must not raise."""

    def stream(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[str, None]:
        """Yield the reply to the last user message of `context`, chunk by chunk.

        Fill `result` (when given) by the time the generator is exhausted.

        Raise `chatbot_sse.errors.EngineError` (or a subclass) on failure. An async
        generator, so the turn can `aclose()` it at once when the reply is cut
        short while the engine is suspended between chunks.
        """


def open_stream(
    engine: Engine,
    context: Sequence[Message],
    result: StreamResult,
    reservation: Reservation | None = None,
) -> AsyncGenerator[str, None]:
    """`engine.stream(context, result)`, or `engine.stream(context)` for an engine without it.

    With a `reservation` (see `reserve`), the reply takes the queue place held for it.
    """
    if reservation is not None:
        return reservation.stream(context, result)
    stream = engine.stream
    function = getattr(stream, "__func__", None)  # a method: its function is asked once
    takes = _accepts_result(stream) if function is None else _takes_result(function)
    if takes:
        return engine.stream(context, result)
    return engine.stream(context)


@runtime_checkable
class BatchingEngine(Protocol):
    """An engine that can hand over the chunks it has ready together, as one list.

    Optional (`open_batches` falls back to `stream`). Each chunk still becomes an event of
    its own; a batch only spares the turn a step of the generator, a call and a publish per
    chunk when several are ready at once (the simulated bot with no delay: the whole reply).
    """

    def stream_batches(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[list[str], None]:
        """`Engine.stream`'s chunks, in order, in lists of those ready together."""


def open_batches(
    engine: Engine,
    context: Sequence[Message],
    result: StreamResult,
    reservation: Reservation | None = None,
) -> AsyncGenerator[Sequence[str], None]:
    """The reply as batches of chunks: `stream_batches` where the engine has it, else
    `open_stream`'s chunks one to a batch."""
    # `getattr`, not `isinstance` on the protocol: that costs a few us per reply.
    stream_batches: Callable[..., AsyncGenerator[Sequence[str], None]] | None = (
        None if reservation is not None else getattr(engine, "stream_batches", None)
    )
    if stream_batches is not None:
        return stream_batches(context, result)
    return _one_by_one(open_stream(engine, context, result, reservation))


async def _one_by_one(chunks: AsyncGenerator[str, None]) -> AsyncGenerator[Sequence[str], None]:
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            yield (chunk,)


def _accepts_result(stream: Callable[..., object]) -> bool:
    return "result" in inspect.signature(stream).parameters


_takes_result = functools.cache(_accepts_result)
"""`_accepts_result`, cached per method: `inspect.signature` costs about as much as the rest
of starting a simulated reply."""


class Reservation(Protocol):
    """A place held in an engine's queue from before a reply's stream starts until it ends.

    An engine with a bounded queue (the local model) offers `reserve()`, which
    claims a place at once or raises `EngineBusy`, so a full queue is a clear
    503 with `Retry-After` instead of an `error` event after a 200. The
    reservation streams exactly one reply; `release()` gives the place back if
    that reply never starts (idempotent; a no-op once `stream` has taken it).
    """

    def stream(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[str, None]: ...

    def release(self) -> None: ...


def reserve(engine: Engine) -> Reservation | None:
    """`engine.reserve()` for engines with a bounded queue; `None` for the others."""
    claim = getattr(engine, "reserve", None)
    return None if claim is None else cast("Reservation", claim())
