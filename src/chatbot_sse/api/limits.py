"""How many streams may run: per worker (503) and per client across workers (429).

A *stream* is a connection the server holds while a reply is produced or
followed: `POST /chat`, `GET /conversations/{id}/stream` and
`/v1/chat/completions` (whole or streamed). `StreamGate.enter()` admits one or
raises; what it returns must be awaited when the connection ends (the
`EventStreamResponse` does it via `on_close`).

- `MAX_STREAMS_PER_WORKER`: a counter in this process. It protects the worker
  (memory, event loop), so it is the worker's own business: 503 `server_busy`,
  which a load balancer can retry elsewhere.
- `MAX_STREAMS_PER_KEY`: slots in the store (`Guards.acquire_slot`), shared by
  every worker and instance: 429 `too_many_streams`. A slot is leased for
  `connection_seconds()` (no connection lives longer), so the slots of a
  worker that died free themselves. If the store cannot count, the stream is
  admitted (the reply needs the store anyway and fails on its own).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from chatbot_sse.config import Settings
from chatbot_sse.errors import ServerBusy, StoreUnavailable, TooManyStreams
from chatbot_sse.observability.logging import get_logger
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.stores.base import Guards

log = get_logger(__name__)

Release = Callable[[], Awaitable[None]]

CONNECTION_MARGIN_SECONDS = 5.0
"""A connection outlives its reply's `MAX_STREAM_SECONDS` by this much, to deliver the end."""
UNBOUNDED_LEASE_SECONDS = 3600.0
"""The lease of a stream slot when streams have no maximum duration."""
SLOT_RETRY_AFTER = 2.0


def connection_seconds(settings: Settings) -> float:
    """The longest any stream connection may last (0: unbounded)."""
    if settings.max_stream_seconds <= 0:
        return 0.0
    return settings.max_stream_seconds + CONNECTION_MARGIN_SECONDS


class StreamGate:
    def __init__(
        self, store: Guards, metrics: Metrics, *, per_worker: int, per_key: int, lease: float
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.per_worker = per_worker  # 0: no limit
        self.per_key = per_key  # 0: no limit
        self.lease = lease or UNBOUNDED_LEASE_SECONDS
        self.active = 0

    @classmethod
    def from_settings(cls, store: Guards, metrics: Metrics, settings: Settings) -> StreamGate:
        return cls(
            store,
            metrics,
            per_worker=settings.max_streams_per_worker,
            per_key=settings.max_streams_per_key,
            lease=connection_seconds(settings),
        )

    async def enter(self, identity: str) -> Release:
        """Admit one stream of `identity`, or raise `ServerBusy` / `TooManyStreams`."""
        if self.per_worker and self.active >= self.per_worker:
            self.metrics.rejected(ServerBusy.code)
            raise ServerBusy(f"this server is at its limit of {self.per_worker} streams")
        self.active += 1
        holder: str | None = None
        try:
            if self.per_key:
                holder = secrets.token_hex(8)
                if not await self.store.acquire_slot(identity, holder, self.per_key, self.lease):
                    self.metrics.rejected(TooManyStreams.code)
                    raise TooManyStreams(
                        f"at most {self.per_key} concurrent streams per client",
                        retry_after=SLOT_RETRY_AFTER,
                    )
        except StoreUnavailable:
            log.warning("stream_slots_unavailable", exc_info=True)
            holder = None
        except BaseException:
            self.active -= 1
            raise
        released = False

        async def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.active -= 1
            if holder is not None:
                try:
                    await self.store.release_slot(identity, holder)
                except Exception:  # the lease frees it in the end
                    log.warning("stream_slot_not_released", exc_info=True)

        return release
