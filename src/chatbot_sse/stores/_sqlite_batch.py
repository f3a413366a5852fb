"""Group commit for the SQLite store: many writers, one transaction, one fsync.

Every write of the store becomes an operation queued here. The store's single
thread takes all operations queued so far and runs them in ONE
`BEGIN IMMEDIATE … COMMIT`; then it resolves every waiting caller at once. One
failing operation (a duplicate id, an unknown conversation) must roll back
alone: the batch is first run as it is, and only if an operation raises is it
undone and run again with each operation in a SAVEPOINT of its own (two
statements per operation, each a hand-over of the GIL between this thread
and the event loop, for what almost never happens). Operations are plain SQL
on the connection: the undone first run leaves no trace.

While a commit's fsync is under way, new writes pile up and go together in the
next batch: under load the cost of an fsync is shared by every turn that
arrived meanwhile, instead of each turn paying three of them in a row.

A batch is committed with `synchronous = FULL` if any of its operations is
durable (a conversation or a message: acknowledged data), else `NORMAL` (the
reply log: a replay cache whose rows the next FULL commit fsyncs anyway). A
caller is answered only after the commit that contains its write, so "stored"
still means "on disk".
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from chatbot_sse.stores._sqlite_writer_lock import WriterLock

T = TypeVar("T")

Operation = tuple[Callable[[sqlite3.Connection], Any], bool, "asyncio.Future[Any]"]
Outcome = tuple[bool, Any]  # (succeeded, value or exception)


class GroupCommit:
    """Queues writes and commits them in batches on the store's thread."""

    def __init__(
        self, connection: Callable[[], sqlite3.Connection], writer_lock: WriterLock | None = None
    ) -> None:
        self._connection = connection
        self._writer_lock = writer_lock
        self._lock = threading.Lock()
        self._pending: list[Operation] = []
        self._draining = False
        self.outstanding: set[asyncio.Future[Any]] = set()  # submitted, not yet answered

    async def submit(
        self, executor: Executor, fn: Callable[[sqlite3.Connection], T], durable: bool
    ) -> T:
        """Run `fn(connection)` in the next batch; return once that batch is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.outstanding.add(future)
        future.add_done_callback(self.outstanding.discard)
        with self._lock:
            self._pending.append((fn, durable, future))
            start, self._draining = not self._draining, True
        if start:
            try:
                executor.submit(self._drain, executor, loop)
            except RuntimeError:  # the executor is shut down: the store was closed
                with self._lock:
                    self._pending.clear()
                    self._draining = False
                raise sqlite3.OperationalError("the store is closed") from None
        return await future

    def _drain(self, executor: Executor, loop: asyncio.AbstractEventLoop) -> None:
        """On the store's thread: commit one batch of everything pending.

        If more writes arrived meanwhile, the next batch is queued behind the
        reads already waiting for the thread, so a stream of writes never
        starves them.
        """
        with self._lock:
            batch, self._pending = self._pending, []
        outcomes = self._commit(batch)
        loop.call_soon_threadsafe(_settle, batch, outcomes)
        with self._lock:
            if not self._pending:
                self._draining = False
                return
        try:
            executor.submit(self._drain, executor, loop)
        except RuntimeError:  # closed meanwhile: fail what is left rather than strand it
            with self._lock:
                stranded, self._pending = self._pending, []
                self._draining = False
            closed = sqlite3.OperationalError("the store is closed")
            loop.call_soon_threadsafe(_settle, stranded, [(False, closed)] * len(stranded))

    def _commit(self, batch: list[Operation]) -> list[Outcome]:
        outcomes: list[Outcome]
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()
            durable = any(op[1] for op in batch)
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            if self._writer_lock is not None:
                self._writer_lock.acquire()
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = [(True, fn(conn)) for fn, _, _ in batch]
            except Exception:  # one failed: undo them all, then run each in a savepoint
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [_isolated(conn, fn) for fn, _, _ in batch]
            conn.execute("COMMIT")
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")  # the connection's resting state
        except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch was written
            try:
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
            except Exception:  # noqa: S110 - the original error is what callers must see
                pass
            return [(False, exc)] * len(batch)
        finally:
            if self._writer_lock is not None:
                self._writer_lock.release()
        return outcomes


def _isolated(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Outcome:
    """`fn` in a savepoint of its own: if it fails, it alone is undone."""
    conn.execute("SAVEPOINT op")
    try:
        return True, fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        return False, exc
    finally:
        conn.execute("RELEASE op")


def _settle(batch: list[Operation], outcomes: list[Outcome]) -> None:
    """On the event loop: answer every caller of a committed (or failed) batch."""
    for (_, _, future), (succeeded, value) in zip(batch, outcomes, strict=True):
        if future.done():  # the caller was cancelled; its write is committed all the same
            continue
        if succeeded:
            future.set_result(value)
        else:
            future.set_exception(value)
