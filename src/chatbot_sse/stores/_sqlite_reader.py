"""The SQLite store's read connection: reads never queue behind a commit.

In WAL mode a reader sees the last committed state without waiting for the
writer, but only on a connection of its own: on the writer's thread, a
history read or a `/health` ping would wait for every fsync queued before it
(hundreds of milliseconds under load). So reads go to a second connection,
`query_only`, on a thread of its own. A caller that awaited a write reads it
back here: the write was committed before the caller was answered.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ReadConnection:
    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread

    async def open(self) -> None:
        """Connect, after the writer has created the file and its schema."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        self._conn = conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the read thread; sqlite3 errors propagate to the store."""
        if self._executor is None:
            raise sqlite3.OperationalError("the read connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise sqlite3.OperationalError("the read connection is closed")
        return fn(self._conn)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
