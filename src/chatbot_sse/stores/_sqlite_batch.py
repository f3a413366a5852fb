"""Group commit for the SQLite store: many writers, one transaction, one fsync.

Every write of the store becomes an operation queued here, and all operations
queued so far go in ONE `BEGIN IMMEDIATE … COMMIT`; every waiting caller is
answered at once after it. While a commit's fsync is under way, new writes pile
up and go together in the next batch: under load the cost of an fsync is
shared by every turn that arrived meanwhile.

Where each step runs. The operations themselves run on the event loop, and
only what may block goes to the store's thread:
- `BEGIN IMMEDIATE` runs on the loop when the cross-process writer lock is
  free at once and SQLite's write lock too (busy timeout 0 for that try);
  otherwise, on the thread, which waits for both (another worker's commit, or
  a process that does not take the writer lock, such as the sqlite3 shell);
- the operations run on the loop, synchronously: with the write lock held they
  never wait for a lock, and they only touch SQLite's page cache;
- `COMMIT` (which writes and fsyncs the WAL) runs on the loop too while commits
  are quick (`CommitClock`: their running average under `LOOP_COMMIT_LIMIT`),
  and on the thread while they are slow (a disk whose fsync takes milliseconds),
  which then lets the writer lock go.
Why not all on the thread: Python's `sqlite3` releases the GIL around every
statement step, and the store's thread had to win it back from a busy event
loop after each one. Measured under wrk, a batch of 25 operations spent 3.6 ms
getting through its statements that way, and replies waited for it: the loop
sat idle 10-15 % of the time. On the loop, the same operations take 0.8 ms,
and the thread needs the GIL only once or twice per batch.
Why the commit on the loop: on a disk whose fsync takes ~0.4 ms (this project's
benchmark machines: p50 0.42 ms, p99 2.5 ms with the WAL's checkpoints, under
wrk), the hand-over to the thread cost more than the fsync it moved off the
loop: the thread's wake-up, the GIL taken from the busy loop and given back,
the news brought back to the loop. Committed on the loop, one uvicorn worker
under wrk used 241 instead of 265 us of CPU per reply (+6.6 % replies/s, uvloop;
asyncio's loop unchanged), and 1,000 paced replies 0-4 % less CPU and a p99
lateness 2-6 % lower on both stacks (docs/bench.md, 2026-12-04 late evening).
A slow disk would stall the loop for every fsync instead: after commits whose
average passed the limit, commits go to the thread for `THREAD_SPELL_SECONDS`,
then one is tried on the loop again.
The exception: an operation submitted as `long` (deleting a conversation,
whose rows may number 100,000) runs, with the rest of its batch, on the
thread. On the loop such a delete stalled every stream of the process for its
whole duration (~210 ms for 100,000 messages); on the thread, which lets the
GIL go for each statement's work, the loop goes on serving meanwhile.
Nothing else uses the connection while a batch is open: this class owns it.

A batch waits for the writes that are on their way (`GroupCommit._gather`):
a turn of the event loop at a time (`_next_turn`), as long as each turn brings
more, at most `GATHER_SECONDS`. Each commit costs about 150 us of CPU beyond its
statements (the fsync, the pages of every index it touched written to the WAL,
the hand-overs to and from the thread): taking the next batch at once, as soon
as the last one committed, made batches of a few writes. Gathering, under wrk on one
worker: the store's thread woke 1.5 -> 0.2 times per reply, CPU per reply
-12 %, replies/s +8 % (two workers: +27 %).

One failing operation (a duplicate id, an unknown conversation) must roll back
alone: the batch first runs as it is, and only if an operation raises is it
rolled back and run again with each operation in a savepoint of its own. (A
savepoint around every batch would cost more than the failures it saves: its
journal of the pages a batch changes spills to a temporary file past 64 KiB.)
Operations are plain SQL on the connection: the undone first run leaves no trace.

A batch is committed with `synchronous = FULL` if any of its operations is
durable (a conversation or a message: acknowledged data), else `NORMAL` (the
reply log: a replay cache whose rows the next FULL commit fsyncs anyway). A
caller is answered only after the commit that contains its write, so "stored"
still means "on disk".
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from chatbot_sse.stores._sqlite_writer_lock import WriterLock

T = TypeVar("T")

GATHER_SECONDS = 0.002
LOOP_COMMIT_LIMIT = 0.002
"""Seconds a commit may take on average and still run on the event loop."""
COMMIT_TIME_WEIGHT = 0.1  # of the newest commit in the running average
THREAD_SPELL_SECONDS = 5.0
"""How long commits stay on the thread once they were too slow for the loop."""

Operation = tuple[Callable[[sqlite3.Connection], Any], bool, "asyncio.Future[Any]", bool]
"""(fn, durable, the caller's future, long)"""
Outcome = tuple[bool, Any]  # (succeeded, value or exception)


class CommitClock:
    """Where the next `COMMIT` runs: on the loop while commits are quick, else on the thread.

    The average is of the commits run on the loop (a commit on the thread is timed with
    the GIL's hand-overs in it, which say nothing of the disk). Once it passes the limit,
    commits go to the thread for a spell; the first one after it is on the loop again,
    starting from the limit, so one quick commit brings the loop back and one slow one
    sends the next spell to the thread: a disk that stays slow stalls the loop for one
    commit per spell.
    """

    __slots__ = ("average", "thread_until")

    def __init__(self) -> None:
        self.average = 0.0  # seconds
        self.thread_until = 0.0  # loop time

    def on_loop(self, now: float) -> bool:
        return now >= self.thread_until

    def took(self, seconds: float, now: float) -> None:
        """A commit on the loop took `seconds`, ending at loop time `now`."""
        self.average += (seconds - self.average) * COMMIT_TIME_WEIGHT
        if self.average > LOOP_COMMIT_LIMIT:
            self.thread_until = now + THREAD_SPELL_SECONDS
            self.average = LOOP_COMMIT_LIMIT


class GroupCommit:
    """Queues writes and commits them in batches, one batch at a time.

    `busy_timeout_ms` is the connection's busy timeout at rest (set by the
    store): the loop's attempt at `BEGIN IMMEDIATE` lowers it to 0 for itself.
    """

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection],
        writer_lock: WriterLock | None = None,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self._connection = connection
        self._writer_lock = writer_lock
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._pending: list[Operation] = []
        self._drainer: asyncio.Task[None] | None = None
        self.clock = CommitClock()
        self.outstanding: set[asyncio.Future[Any]] = set()  # submitted, not yet answered

    async def submit(
        self,
        executor: Executor,
        fn: Callable[[sqlite3.Connection], T],
        durable: bool,
        long: bool = False,
    ) -> T:
        """Run `fn(connection)` in the next batch; return once that batch is committed.
        `long`: `fn` may take long enough to stall the loop; its batch runs on the thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.outstanding.add(future)
        future.add_done_callback(self.outstanding.discard)
        self._pending.append((fn, durable, future, long))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(executor))
        return await future

    async def _drain(self, executor: Executor) -> None:
        """Commit batches until nothing is pending. A task of its own: a caller that is
        cancelled stops waiting, never the batch its write is in."""
        try:
            while self._pending:
                await self._gather()
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self._commit(executor, batch)
                except BaseException:  # cancelled (the loop is closing): answer, then stop
                    _settle(batch, [(False, _closed())] * len(batch))
                    raise
                if outcomes is not None:  # None: answered already, as the commit ended
                    _settle(batch, outcomes)
        finally:
            self._drainer = None
            stranded, self._pending = self._pending, []
            _settle(stranded, [(False, _closed())] * len(stranded))

    async def _gather(self) -> None:
        """Let the writes that are on their way join the batch: wait a turn of the event
        loop (its I/O included) at a time, while each turn brings more, for at most
        `GATHER_SECONDS`. An idle server waits one turn."""
        loop = asyncio.get_running_loop()
        until = loop.time() + GATHER_SECONDS
        while True:
            waiting = len(self._pending)
            await _next_turn(loop)
            if len(self._pending) == waiting or loop.time() >= until:
                return

    async def _commit(self, executor: Executor, batch: list[Operation]) -> list[Outcome] | None:
        """Run and commit `batch`: the outcomes to answer its callers with, or None once
        `_committed` has answered them."""
        loop = asyncio.get_running_loop()
        durable = any(op[1] for op in batch)
        long = any(op[3] for op in batch)
        try:
            conn = self._connection()
            if not self._try_begin(conn, durable):
                await loop.run_in_executor(executor, self._begin, conn, durable)
        except RuntimeError:  # the executor is shut down: the store was closed
            return [(False, _closed())] * len(batch)
        except Exception as exc:  # lock or BEGIN failed: nothing of the batch was written
            return [(False, exc)] * len(batch)
        stopped: BaseException | None = None
        try:
            outcomes = await self._run(executor, conn, batch, long)
        except BaseException as error:  # nothing of the batch is kept
            stopped = error
        if stopped is not None:  # undone after the handler, not in it (see `_run`)
            try:
                await asyncio.shield(self._abandon(executor, conn, durable))
                if isinstance(stopped, Exception):
                    return [(False, stopped)] * len(batch)
                raise stopped
            finally:  # a frame holding its own traceback would be a cycle
                stopped = None
        if not long and self.clock.on_loop(loop.time()):
            return self._commit_here(conn, durable, batch, outcomes, loop)
        answered: asyncio.Future[None] = loop.create_future()
        try:
            executor.submit(self._end_and_answer, loop, conn, durable, batch, outcomes, answered)
        except RuntimeError:  # the executor is shut down: the store was closed
            with contextlib.suppress(Exception):  # a rollback, no fsync: fine on the loop
                self._end(conn, durable, False)
            return [(False, _closed())] * len(batch)
        await answered  # cancelled (the loop is closing): the thread commits all the same
        return None

    def _commit_here(
        self,
        conn: sqlite3.Connection,
        durable: bool,
        batch: list[Operation],
        outcomes: list[Outcome],
        loop: asyncio.AbstractEventLoop,
    ) -> list[Outcome]:
        """COMMIT on the loop (it is quick here: `CommitClock`), timed."""
        started = time.perf_counter()
        try:
            return self._end_batch(conn, durable, batch, outcomes)
        finally:
            self.clock.took(time.perf_counter() - started, loop.time())

    def _end_batch(
        self,
        conn: sqlite3.Connection,
        durable: bool,
        batch: list[Operation],
        outcomes: list[Outcome],
    ) -> list[Outcome]:
        """COMMIT, wherever it runs: `outcomes`, or the commit's failure for every caller."""
        try:
            self._end(conn, durable, True)
        except Exception as exc:  # COMMIT failed: nothing of the batch was written
            return [(False, exc)] * len(batch)
        return outcomes

    def _end_and_answer(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: sqlite3.Connection,
        durable: bool,
        batch: list[Operation],
        outcomes: list[Outcome],
        answered: asyncio.Future[None],
    ) -> None:
        """On the store's thread: COMMIT, then have the loop answer the batch's callers.

        The callers are answered by the very callback that brings the news to the loop
        (`_committed`), not by the drainer after it: an awaited `run_in_executor` (and the
        `shield` the drainer needs around it) takes three turns of the loop to wake the
        drainer, and a fourth to wake the callers. Under a thousand paced replies a turn
        is 5-30 ms, and every reply waits for two commits (docs/bench.md)."""
        outcomes = self._end_batch(conn, durable, batch, outcomes)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_committed, batch, outcomes, answered)

    @staticmethod
    async def _run(
        executor: Executor, conn: sqlite3.Connection, batch: list[Operation], long: bool
    ) -> list[Outcome]:
        """In the batch's transaction: each operation's outcome. On the loop, unless one of
        them is long."""
        loop = asyncio.get_running_loop()
        if long:
            return await loop.run_in_executor(executor, _run_on_thread, conn, batch)
        outcomes = _run_together(conn, batch)
        if outcomes is not None:
            return outcomes
        await loop.run_in_executor(executor, _begin_again, conn)
        return [_isolated(conn, fn) for fn, _, _, _ in batch]

    async def _abandon(self, executor: Executor, conn: sqlite3.Connection, durable: bool) -> None:
        """Roll back whatever is open and let the writer lock go; never raises."""
        with contextlib.suppress(Exception):
            if conn.in_transaction:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(executor, self._end, conn, durable, False)
            else:
                self._release(conn, durable)

    def _try_begin(self, conn: sqlite3.Connection, durable: bool) -> bool:
        """On the loop: the writer lock and the write transaction if both are free now, never
        waiting. False: neither is held, and the thread must wait for them (`_begin`)."""
        lock = self._writer_lock
        if conn.in_transaction:
            return False  # left open by a failure that could not roll back: the thread will
        try:
            if lock is not None and not lock.try_acquire():
                return False
        except OSError:
            return False  # the thread's attempt raises it for the batch
        try:
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        except sqlite3.Error:  # busy (a process outside the writer lock), or worse
            self._release(conn, durable)
            return False
        return True

    def _begin(self, conn: sqlite3.Connection, durable: bool) -> None:
        """On the store's thread: wait for the writer lock and the write transaction."""
        if self._writer_lock is not None:
            self._writer_lock.acquire()
        try:
            if conn.in_transaction:  # a rollback that failed left it open: start clean
                conn.execute("ROLLBACK")
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release(conn, durable)
            raise

    def _end(self, conn: sqlite3.Connection, durable: bool, commit: bool) -> None:
        """On the store's thread: COMMIT (or ROLLBACK), then let the writer lock go.
        Raises if the commit failed, after rolling back."""
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except BaseException:
            if conn.in_transaction:  # the original error is what callers must see
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            raise
        finally:
            self._release(conn, durable)

    def _release(self, conn: sqlite3.Connection, durable: bool) -> None:
        try:
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")  # the connection's resting state
        finally:
            if self._writer_lock is not None:
                self._writer_lock.release()


def _next_turn(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """Done at the loop's next turn, after that turn's I/O callbacks: a timer due now.

    Not `asyncio.sleep(0)`, which resumes ahead of the next turn's I/O callbacks, so
    nothing on its way would have come; nor a timer a little ahead (this was 0.1 ms):
    uvloop runs it at the next turn all the same (it counts in whole milliseconds), but
    asyncio's selector rounds any positive timeout up to 1 ms, and an idle loop slept
    that long per batch. Under wrk every connection waits for the same commit, so that
    was the loop idle: asyncio + h11 was busy 0.92 of a core, 0.97 since.
    """
    turn: asyncio.Future[None] = loop.create_future()
    loop.call_at(loop.time(), _turned, turn)
    return turn


def _turned(turn: asyncio.Future[None]) -> None:
    if not turn.done():  # its batch's drainer was cancelled meanwhile (the loop is closing)
        turn.set_result(None)


def _closed() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("the store is closed")


def _run_together(conn: sqlite3.Connection, batch: list[Operation]) -> list[Outcome] | None:
    """Every operation of the batch; None if one failed, and then all are undone (the writer
    lock stays held), to be run again each in a savepoint. A function of its own, so the
    retry's `await` in `GroupCommit._run` is not inside the handler: compiled (mypyc), a
    coroutine suspended in an `except` block leaves its exception current for other tasks."""
    try:
        return [(True, fn(conn)) for fn, _, _, _ in batch]
    except Exception:
        conn.execute("ROLLBACK")
        return None


def _run_on_thread(conn: sqlite3.Connection, batch: list[Operation]) -> list[Outcome]:
    """`GroupCommit._run` on the store's thread, for a batch with a long operation."""
    outcomes = _run_together(conn, batch)
    if outcomes is not None:
        return outcomes
    _begin_again(conn)
    return [_isolated(conn, fn) for fn, _, _, _ in batch]


def _begin_again(conn: sqlite3.Connection) -> None:
    """On the store's thread: the write transaction again, after a rollback (writer lock held)."""
    conn.execute("BEGIN IMMEDIATE")


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


def _committed(
    batch: list[Operation], outcomes: list[Outcome], answered: asyncio.Future[None]
) -> None:
    """On the event loop, as the news of a batch's commit (or its failure) arrives."""
    _settle(batch, outcomes)
    if not answered.done():  # its drainer was cancelled meanwhile (the loop is closing)
        answered.set_result(None)


def _settle(batch: list[Operation], outcomes: list[Outcome]) -> None:
    """On the event loop: answer every caller of a committed (or failed) batch."""
    for (_, _, future, _), (succeeded, value) in zip(batch, outcomes, strict=True):
        if future.done():  # the caller was cancelled; its write is committed all the same
            continue
        if succeeded:
            future.set_result(value)
        else:
            future.set_exception(value)
