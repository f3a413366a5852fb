"""Scheduling: who sends which turn when, and the end-of-run history check.

A *session* is one virtual user: one turn, or `turns` turns in one
conversation with `--multi-turn`. Two ways to schedule sessions:
- closed loop (default): `concurrency` users, each starting its next session
  as soon as the last one ended; with `ramp_up`, user i joins at
  `ramp_up * i / concurrency`, so the load grows linearly to `concurrency`;
- open loop (`rate`): sessions arrive as a Poisson process of `rate` per
  second (ramped linearly over `ramp_up`), however slow the server gets. This
  is what exposes queueing: a closed loop slows down with the server and hides it.

`requests` caps the number of streams, `duration` stops new streams after that
many seconds; streams in flight are always allowed to finish (or time out).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatbot_sse.loadtest.client import CONNECTION, StreamOptions, StreamRecord, run_turn
from chatbot_sse.loadtest.history import SessionLog, verify_histories
from chatbot_sse.loadtest.timeline import Timeline
from chatbot_sse.loadtest.transport import Pool, Target

__all__ = ["Run", "RunConfig", "RunResult"]

DEFAULT_MESSAGE = "Hello! Tell me something interesting about streaming."
REFUSED_PAUSE = 0.1  # seconds a user waits after a stream that found no server to connect to


@dataclass(slots=True)
class RunConfig:
    url: str
    requests: int | None = 100
    concurrency: int = 10
    duration: float | None = None
    ramp_up: float = 0.0
    rate: float | None = None
    multi_turn: bool = False
    turns: int = 3
    think_time: float = 0.0
    messages: list[str] = field(default_factory=lambda: [DEFAULT_MESSAGE])
    seed: int | None = None
    verify_history: bool = True
    stream: StreamOptions = field(default_factory=StreamOptions)

    def to_json(self) -> dict[str, Any]:
        """The configuration as written into the results file."""
        return {
            "url": self.url,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "duration_s": self.duration,
            "ramp_up_s": self.ramp_up,
            "rate_per_s": self.rate,
            "mode": "open_loop" if self.rate else "closed_loop",
            "multi_turn": self.multi_turn,
            "turns": self.turns if self.multi_turn else 1,
            "think_time_s": self.think_time,
            "messages": len(self.messages),
            "seed": self.seed,
            "timeout_s": self.stream.timeout,
            "drop_rate": self.stream.drop_rate,
            "slow_reader": self.stream.slow_reader,
            "keep_alive": self.stream.keep_alive and not self.stream.slow_reader,
            "headers": [name for name, _ in self.stream.headers],  # names only: values may be keys
        }


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    records: list[StreamRecord]
    timeline: Timeline
    elapsed_s: float
    conversations_checked: int = 0
    conversations_mismatched: int = 0
    connections_opened: int | None = None  # with keep-alive; None: one connection per request
    connections_reused: int | None = None
    client_cpu_s: float = 0.0  # this process's CPU while streaming (the history check excluded)


class Run:
    """One load test run. `execute()` once; read the live counters from `progress`."""

    def __init__(self, config: RunConfig) -> None:
        if config.requests is None and config.duration is None:
            raise ValueError("give --requests or --duration, or the run never ends")
        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311 - load shapes, not secrets
        self.records: list[StreamRecord] = []
        self.sessions: list[SessionLog] = []
        self.timeline = Timeline(time.perf_counter())
        self._deadline = float("inf")
        self._issued = 0
        self._next_index = 0
        self._next_session = 0
        # A slow reader's small receive buffer is set on its own socket: never shared.
        keep = config.stream.keep_alive and not config.stream.slow_reader
        self.pool: Pool | None = Pool() if keep else None

    # live counters for the progress display ----------------------------------
    @property
    def completed(self) -> int:
        return sum(self.timeline.completed)

    @property
    def failed(self) -> int:
        return sum(self.timeline.failed)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.timeline.t0

    async def execute(self, on_tick: Callable[[Run], None] | None = None) -> RunResult:
        cfg = self.config
        target = await Target.resolve(cfg.url)
        self.timeline = Timeline(time.perf_counter())
        cpu = time.process_time()
        if cfg.duration is not None:
            self._deadline = self.timeline.t0 + cfg.duration
        ticker = asyncio.create_task(self._tick(on_tick)) if on_tick else None
        try:
            if cfg.rate:
                await self._open_loop(target, cfg.rate)
            else:
                await asyncio.gather(
                    *(self._user(target, i) for i in range(max(1, cfg.concurrency)))
                )
        finally:
            if ticker is not None:
                ticker.cancel()
            if self.pool is not None:
                self.pool.close()
        elapsed = time.perf_counter() - self.timeline.t0
        result = RunResult(cfg, self.records, self.timeline, elapsed)
        result.client_cpu_s = time.process_time() - cpu
        if self.pool is not None:
            result.connections_opened = self.pool.opened
            result.connections_reused = self.pool.reused
        if cfg.multi_turn and cfg.verify_history:
            checked, mismatched = await verify_histories(target, cfg.stream.headers, self.sessions)
            result.conversations_checked = checked
            result.conversations_mismatched = mismatched
        if on_tick is not None:
            on_tick(self)
        return result

    async def _tick(self, on_tick: Callable[[Run], None]) -> None:
        while True:
            on_tick(self)
            await asyncio.sleep(0.25)

    def _reserve(self, turns: int) -> int:
        """Reserve up to `turns` streams of the request budget for one session.

        A session takes its whole conversation at once, so `--requests 40
        --turns 2` means 20 complete conversations, not some cut after one turn.
        """
        cap = self.config.requests
        if time.perf_counter() >= self._deadline:
            return 0
        n = turns if cap is None else max(0, min(turns, cap - self._issued))
        self._issued += n
        return n

    def _index(self) -> int:
        self._next_index += 1
        return self._next_index - 1

    async def _user(self, target: Target, i: int) -> None:
        cfg = self.config
        if cfg.ramp_up and i:
            await asyncio.sleep(cfg.ramp_up * i / cfg.concurrency)
        while await self._session(target, i):
            pass

    async def _open_loop(self, target: Target, rate: float) -> None:
        cfg = self.config
        turns = cfg.turns if cfg.multi_turn else 1
        tasks: set[asyncio.Task[bool]] = set()
        t0 = self.timeline.t0
        next_at = t0
        arrivals = 0
        while True:
            now = time.perf_counter()
            if now >= self._deadline or (
                cfg.requests is not None and arrivals * turns >= cfg.requests
            ):
                break
            if next_at > now:
                await asyncio.sleep(next_at - now)
                continue
            arrivals += 1
            task = asyncio.create_task(self._session(target, -1))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            ramp = min(1.0, (next_at - t0) / cfg.ramp_up) if cfg.ramp_up else 1.0
            next_at += self.rng.expovariate(max(rate * ramp, rate / 100))
        if tasks:
            await asyncio.gather(*tasks)

    async def _session(self, target: Target, user: int) -> bool:
        """Run one virtual user's turns; False when there was no budget left to start any.

        Turns take the messages in order from a random start, so the turns of a
        conversation differ (when there are several messages) and the history
        check can tell which one is missing.
        """
        cfg = self.config
        sid = self._next_session
        self._next_session += 1
        log = SessionLog(sid)
        turns = self._reserve(cfg.turns if cfg.multi_turn else 1)
        first = self.rng.randrange(len(cfg.messages))
        for t in range(turns):
            if t and time.perf_counter() >= self._deadline:
                break  # --duration is up: no new stream, even mid-conversation
            index = self._index()
            if t and cfg.think_time:
                await asyncio.sleep(cfg.think_time)
            message = cfg.messages[(first + t) % len(cfg.messages)]
            record = StreamRecord(index, user, sid, t, time.perf_counter() - self.timeline.t0)
            self.records.append(record)
            result = await run_turn(
                target,
                cfg.stream,
                self.timeline,
                record,
                message,
                log.conversation_id,
                self.rng,
                self.pool,
            )
            log.add(message, result.reply, record)
            if record.kind == CONNECTION and record.connect_s is None:
                # Not even a connection (the server is down or restarting): a closed-loop user
                # that retried at once would log thousands of refusals a second, not a result.
                await asyncio.sleep(REFUSED_PAUSE)
            if log.conversation_id is None:
                break  # nothing to follow up on
        self._issued -= turns - len(log.turns)  # give back what this session did not use
        if log.turns:
            self.sessions.append(log)
        return bool(log.turns)
