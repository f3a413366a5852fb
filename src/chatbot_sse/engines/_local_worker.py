"""One thread that owns a model and runs its generations one at a time, behind a bounded queue.

The event loop never waits on the model: a job's tokens go back to the
coroutine that submitted it through `loop.call_soon_threadsafe`, one text piece
per token (`deliver`). Each job has a `cancelled` flag that the thread checks
before each token, so a cancelled reply stops within one token, and a job
cancelled while still waiting is skipped.

Admission is counted under one lock: the job running, the jobs waiting, and
places reserved by replies whose stream has not started yet. With `capacity`
places, at most `capacity + 1` replies are in flight (one generating, the rest
waiting or reserved); beyond that `reserve` and `submit` raise `EngineBusy` with
an estimate of when to retry. `capacity=0`: one reply at a time, no queue.
"""

from __future__ import annotations

import codecs
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatbot_sse.domain import Message
from chatbot_sse.engines._local_context import FittedPrompt, fit
from chatbot_sse.engines._local_model import LocalModel
from chatbot_sse.errors import EngineBusy, EngineError
from chatbot_sse.observability.logging import get_logger, request_log_fields

log = get_logger("chatbot_sse.engines.local")


@dataclass(slots=True)
class Stats:
    """What one generation did; filled by the worker thread, read after `Done`."""

    queue_wait: float = 0.0
    prompt_seconds: float = 0.0  # reading the prompt, up to the first token
    generate_seconds: float = 0.0  # from the first token to the end
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    dropped_messages: int = 0
    trimmed_tokens: int = 0


@dataclass(slots=True, frozen=True)
class Done:
    stats: Stats


@dataclass(slots=True, frozen=True)
class Failed:
    error: BaseException


Item = str | Done | Failed
Deliver = Callable[[Item], None]


@dataclass(eq=False)
class Job:
    context: Sequence[Message]
    max_tokens: int
    temperature: float
    seed: int  # -1: a fresh one
    deliver: Deliver
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = field(default_factory=time.perf_counter)
    stats: Stats = field(default_factory=Stats)
    prompt: str = ""
    # The submitter's request-scoped log fields: this thread's lines carry them too.
    log_fields: dict[str, Any] = field(default_factory=request_log_fields)


class Worker:
    """The generation thread of one model, its queue and its counters."""

    def __init__(self, model: LocalModel, capacity: int, max_tokens: int) -> None:
        self.model = model
        self.capacity = capacity
        self.max_tokens = max_tokens
        self.generated_tokens = 0  # every token this model produced, for tests and /health
        self.last_prompt = ""  # the newest prompt the model read, as text
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._reserved = 0
        self._running: Job | None = None
        self._stopped = False
        self._pending: set[Job] = set()
        self._average_seconds = 2.0  # per generation, smoothed; for Retry-After
        self._thread = threading.Thread(target=self._loop, name="local-model", daemon=True)
        self._thread.start()

    # --- admission (any thread) --------------------------------------------------------

    def reserve(self) -> None:
        with self._lock:
            self._check_room()
            self._reserved += 1

    def unreserve(self) -> None:
        with self._lock:
            self._reserved -= 1

    def submit(self, job: Job, *, reserved: bool) -> None:
        """Queue `job`, taking the caller's reserved place or a free one (else `EngineBusy`)."""
        with self._lock:
            if reserved:
                self._reserved -= 1
            if self._stopped:
                raise EngineError("the local model is shutting down")
            if not reserved:
                self._check_room()
            self._waiting += 1
            self._pending.add(job)
        self._jobs.put(job)

    def _check_room(self) -> None:
        ahead = self._waiting + self._reserved + (self._running is not None)
        if ahead > self.capacity:
            retry = math.ceil((ahead + 1) * self._average_seconds)
            raise EngineBusy(
                f"the local model is busy ({ahead} replies waiting); try again shortly",
                retry_after=retry,
            )

    def state(self) -> dict[str, int | bool]:
        with self._lock:
            return {
                "running": self._running is not None,
                "waiting": self._waiting,
                "reserved": self._reserved,
                "capacity": self.capacity,
            }

    def stop(self) -> None:
        """Cancel every job and end the thread after the current token; then `join()`."""
        with self._lock:
            self._stopped = True
            for job in self._pending:
                job.cancelled.set()
        self._jobs.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # --- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting -= 1
                self._running = job
            job.stats.queue_wait = time.perf_counter() - job.enqueued_at
            end: Done | Failed = Done(job.stats)
            try:
                if job.cancelled.is_set():
                    job.stats.finish_reason = "cancelled"
                else:
                    self._generate(job)
            except Exception as exc:
                log.exception("local_generation_failed", **job.log_fields, model=self.model.name)
                end = Failed(exc)
            with self._lock:
                self._running = None
                self._pending.discard(job)
            job.deliver(end)

    def _generate(self, job: Job) -> None:
        started = time.perf_counter()
        model, stats = self.model, job.stats
        room = min(job.max_tokens, max(model.context_size // 2, 1))
        fitted = fit(
            job.context, model.context_size - room, model.render, model.tokenize, model.detokenize
        )
        self._note_prompt(job, fitted)
        limit = min(job.max_tokens, model.context_size - len(fitted.prompt.tokens))
        seed = job.seed if job.seed >= 0 else secrets.randbelow(2**31)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        first_at: float | None = None
        stats.finish_reason = "length"
        if limit <= 0:
            return
        tokens = model.generate(fitted.prompt.tokens, temperature=job.temperature, seed=seed)
        try:
            for token in tokens:
                if first_at is None:
                    first_at = time.perf_counter()
                if job.cancelled.is_set():
                    stats.finish_reason = "cancelled"
                    break
                if model.is_end(token):
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                self.generated_tokens += 1
                if piece := decoder.decode(model.detokenize([token])):
                    job.deliver(piece)
                if stats.completion_tokens >= limit:
                    break
        finally:
            tokens.close()  # type: ignore[attr-defined]  # a generator: frees the model at once
        if tail := decoder.decode(b"", final=True):
            job.deliver(tail)
        ended = time.perf_counter()
        stats.prompt_seconds = (first_at or ended) - started
        stats.generate_seconds = ended - (first_at or ended)
        self._average_seconds = 0.8 * self._average_seconds + 0.2 * (ended - started)
        log.info(
            "local_generation",
            **job.log_fields,
            model=model.name,
            queue_wait_s=round(stats.queue_wait, 4),
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            finish_reason=stats.finish_reason,
            prompt_s=round(stats.prompt_seconds, 4),
            tokens_per_s=round(stats.completion_tokens / stats.generate_seconds, 1)
            if stats.generate_seconds > 0
            else None,
        )

    def _note_prompt(self, job: Job, fitted: FittedPrompt) -> None:
        stats = job.stats
        stats.prompt_tokens = len(fitted.prompt.tokens)
        stats.dropped_messages = fitted.dropped
        stats.trimmed_tokens = fitted.trimmed_tokens
        job.prompt = self.last_prompt = fitted.prompt.text
        if fitted.dropped or fitted.trimmed_tokens:
            log.info(
                "local_context_cut",
                **job.log_fields,
                model=self.model.name,
                context_size=self.model.context_size,
                kept_messages=fitted.kept,
                dropped_messages=fitted.dropped,
                trimmed_tokens=fitted.trimmed_tokens,
                prompt_tokens=stats.prompt_tokens,
            )
        log.debug("local_prompt", **job.log_fields, model=self.model.name, prompt=job.prompt)
