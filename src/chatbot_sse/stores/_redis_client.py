"""The Redis store's connection: one pool, its lifecycle, and the rules every call follows.

- Created in `open()` (after gunicorn forks), closed in `close()`, which lets
  the calls under way finish first and abandons blocking reads.
- Connecting times out after `connect_timeout`, any reply after
  `socket_timeout`: a Redis that is down or hung surfaces as `StoreUnavailable`
  within seconds, never as a hang.
- Nothing broken is kept: redis-py drops a failed connection and the next call
  dials again, so the store recovers by itself when Redis is back. A command
  failing with a connection error is retried once on a fresh connection (a
  pooled one goes stale when Redis restarts); timeouts are not retried, since
  the command may have run.
- At most `MAX_CONNECTIONS` connections: beyond, a call waits for one to be
  free (a blocking pool) rather than failing.
- `in_order(key)`: calls for one key run one at a time, in the order they were
  made. Pooled connections would otherwise let two appends to one conversation
  overtake each other.
- A new connection sends only what every Redis answers: no `CLIENT
  MAINT_NOTIFICATIONS` (redis-py 8 asks for it on RESP3 connections, for Redis
  Cloud and Enterprise endpoints that move during planned maintenance; a moved
  endpoint surfaces as a connection error, which the retry above handles) and
  no `CLIENT SETINFO` (the library's name in `CLIENT LIST`; Redis 7.2+). Redis
  7.0 answers both with errors, which redis-py swallows, but each left a
  reference cycle of frames, tracebacks and exceptions behind (~16 objects per
  connection, and connections are dialled again after every call a leaving
  client cancels), and each cost a round trip per dial.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from chatbot_sse.errors import StoreUnavailable
from chatbot_sse.stores import _redis_layout as layout

__all__ = ["RedisClient"]

NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)
MAX_CONNECTIONS = 1000
"""Connections per process unless the URL says `?max_connections=`: every call under way holds
one (a follower's blocking read too), and a call finding none free waits for one, for up to
`socket_timeout`. redis-py 8's own pool refuses call 101 at once ("Too many connections"):
500 concurrent chats got 400 503s."""

SCRIPTS = {
    "create": layout.CREATE_CONVERSATION,
    "message": layout.APPEND_MESSAGE,
    "events": layout.APPEND_EVENTS,
    "begin": layout.BEGIN_TURN,
    "finish": layout.FINISH_TURN,
    "control": layout.SET_CONTROL,
    "hit": layout.HIT,
    "acquire": layout.ACQUIRE_SLOT,
    "remember": layout.REMEMBER,
    "history_page": layout.HISTORY_PAGE,
    "delete": layout.DELETE_CONVERSATION,
}


class RedisClient:
    """The pool of one `RedisStore`; `where` (no password) names it in errors."""

    def __init__(
        self,
        url: str,
        where: str,
        *,
        connect_timeout: float,
        socket_timeout: float,
        health_check_interval: float,
    ) -> None:
        self.url = url
        self.where = where
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.health_check_interval = health_check_interval
        self.scripts: dict[str, Any] = {}  # name -> redis-py Script (EVALSHA, reloaded if missing)
        self._client: Redis | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._pending = 0
        self._drained: asyncio.Event | None = None
        self._queues: dict[str, tuple[asyncio.Lock, int]] = {}

    def unavailable(self, state: str) -> StoreUnavailable:
        return StoreUnavailable(f"Redis store {self.where} is {state}")

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Redis]:
        """The client for one call: refused unless open; Redis failures become StoreUnavailable."""
        client = self._client
        if client is None:
            raise self.unavailable("closed" if self._closed else "not open")
        self._pending += 1
        try:
            yield client
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis store {self.where} is unavailable: {exc}") from exc
        finally:
            self._pending -= 1
            if not self._pending and self._drained is not None:
                self._drained.set()

    @contextlib.asynccontextmanager
    async def in_order(self, key: str) -> AsyncIterator[None]:
        """Run the block after every earlier `in_order(key)` block of this client."""
        lock, users = self._queues.get(key) or (asyncio.Lock(), 0)
        self._queues[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._queues[key]
            if users == 1:
                del self._queues[key]
            else:
                self._queues[key] = (lock, users - 1)

    async def open(self) -> None:
        """Create the pool and check that Redis answers (StoreUnavailable if not; retry later)."""
        if self._closed:
            raise self.unavailable("closed")
        if self._client is not None:
            return
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=MAX_CONNECTIONS,  # a `max_connections` in the URL wins
            timeout=self.socket_timeout,  # waiting for a free connection, then StoreUnavailable
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.socket_timeout,
            health_check_interval=self.health_check_interval,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            maint_notifications_config=NO_MAINT_NOTIFICATIONS,
            driver_info=None,  # no CLIENT SETINFO
        )
        client = Redis.from_pool(pool)
        try:
            await client.ping()
        except BaseException as exc:
            await client.aclose()
            if isinstance(exc, RedisError | OSError):
                raise StoreUnavailable(f"cannot reach Redis store {self.where}: {exc}") from exc
            raise
        if self._client is not None or self._closed:  # a concurrent open() or close() won
            await client.aclose()
            if self._closed:
                raise self.unavailable("closed")
            return
        self.scripts = {name: client.register_script(lua) for name, lua in SCRIPTS.items()}
        self._closing = asyncio.get_running_loop().create_future()
        self._client = client

    async def close(self) -> None:
        """Refuse new calls, let the ones under way finish, end blocking reads, close the pool."""
        self._closed = True
        client, self._client = self._client, None
        if client is None:
            return
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        while self._pending:
            self._drained = asyncio.Event()
            await self._drained.wait()
        self.scripts = {}
        await client.aclose()

    async def block_read(self, key: str, after: str, seconds: float) -> Any:
        """`XREAD BLOCK` on one stream for up to `seconds` (keep it under `socket_timeout`).

        The entries after id `after`, or [] on timeout. If the store closes
        meanwhile, the read is abandoned: StoreUnavailable.
        """
        async with self.use() as client:
            closing = self._closing
            assert closing is not None  # set whenever there is a client
            streams: dict[Any, Any] = {key: after}
            block_ms = max(1, round(seconds * 1000))
            read = asyncio.ensure_future(client.xread(streams, block=block_ms))
            try:
                await asyncio.wait((read, closing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not read.done():
                    read.cancel()  # redis-py drops the connection of a command cut short
                    await asyncio.wait((read,))
                elif not read.cancelled():
                    read.exception()  # retrieved, even if we leave by cancellation
            if read.cancelled():
                raise self.unavailable("closed")
            response: Any = read.result()
        if isinstance(response, dict):  # RESP3
            response = list(response.items())
        return response[0][1] if response else []
