"""A turn's lifecycle, from the user's message to the stored reply. No HTTP here.

`begin()` does everything that can still fail as a plain HTTP error: find or
create the conversation and durably store the user's message. `run()` then
drives the engine and hands each event to a sink; the transport decides how
events reach the client. Whatever happens to the stream afterwards (engine
failure, client disconnect, shutdown), the reply produced so far is stored,
marked with how it ended, before the cancellation or error propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatbot_sse.domain import (
    Message,
    MessageStatus,
    Role,
    Usage,
    new_conversation_id,
    new_message_id,
)
from chatbot_sse.engines.base import Engine, Reservation, StreamResult, open_batches, reserve
from chatbot_sse.errors import ChatError
from chatbot_sse.observability.logging import get_logger
from chatbot_sse.observability.metrics import Metrics
from chatbot_sse.stores.base import Store

log = get_logger(__name__)


@dataclass(slots=True, frozen=True)
class TurnEvent:
    """One event of a reply: its SSE name, its id and its JSON payload."""

    name: str
    id: str
    data: dict[str, Any]


EventSink = Callable[[TurnEvent], Awaitable[None]]

ChunkSink = Callable[[int, Sequence[str]], None]
"""Delivers `message` events as the seq of the first and the contents of each, in order,
without awaiting: for transports that queue frames anyway (`ReplyHub`), the reply's hot
path skips building a `TurnEvent`, its dict and a coroutine per chunk, and takes the
chunks an engine had ready together (`open_batches`) in one call."""

ReplyFinisher = Callable[[TurnEvent, Message], Awaitable[None]]
"""Stores a turn's reply (complete or partial) and delivers its terminal event, in that
order: `completed` must never reach a client for a reply that is not stored. A finisher
that owns the reply's log (`ReplyHub`) writes both in one store call; `store_then_emit`
is the plain version. Raises if the reply could not be stored."""


@dataclass(slots=True, frozen=True)
class Turn:
    conversation_id: str
    user_message: Message | None
    reply_id: str
    new_conversation: bool
    context: Sequence[Message] | None = None
    """Given: a stateless turn (OpenAI's API without a stored conversation) run on exactly
    these messages; nothing is read from or written to the store."""
    reservation: Reservation | None = None  # the engine's queue place, held since it began
    history: Sequence[Message] | None = None
    """A stored turn's context, read when it began (the newest MAX_HISTORY_LENGTH messages)."""

    @classmethod
    def stateless(cls, context: Sequence[Message]) -> Turn:
        return cls("", None, new_message_id(), False, context)

    def ids(self) -> dict[str, str]:
        """What every event of a stored turn carries (its conversation and reply); a stateless
        turn's events carry nothing: there is nothing to come back to."""
        if self.context is not None:
            return {}
        return {"conversation_id": self.conversation_id, "message_id": self.reply_id}

    def connected(self) -> TurnEvent:
        """The event that opens the reply: it says the message is in, so it is known as soon as
        the turn began, before the engine has run (see `TurnService.run`'s `announced`)."""
        return TurnEvent("connected", f"{self.reply_id}:0", {"type": "connected", **self.ids()})


_CANCEL_MESSAGES = {
    "interrupted": "the reply was stopped: its client left and did not come back in time",
    "cancelled": "the reply was cancelled on request",
    "shutdown": "the server shut down during the reply; send the message again",
    "stream_timeout": "the reply ran longer than this server allows and was stopped",
    "superseded": "a newer message in this conversation replaced this reply",
    "deleted": "the conversation was deleted",
}
_NOT_RETRYABLE = frozenset({"cancelled", "stream_timeout", "superseded", "deleted"})


def cancel_error(reason: str) -> dict[str, Any]:
    """The `error` of a reply stopped for `reason` (the `CancelledError` message): what its
    own stream ends with, and what a reader elsewhere is told when it finds the reply gone."""
    return {
        "code": reason,
        "message": _CANCEL_MESSAGES.get(reason, reason),
        "retryable": reason not in _NOT_RETRYABLE,
    }


def _approx_tokens(text: str) -> int:
    """Whitespace tokens: a cheap, engine-independent usage estimate."""
    return len(text.split())


def _usage(result: StreamResult, context: Sequence[Message], reply: str) -> Usage:
    """The engine's token counts where it reported them, the estimate otherwise."""
    prompt = result.prompt_tokens
    completion = result.completion_tokens
    return Usage(
        prompt_tokens=sum(_approx_tokens(m.content) for m in context) if prompt is None else prompt,
        completion_tokens=_approx_tokens(reply) if completion is None else completion,
    )


class TurnService:
    """Runs turns against one store and one engine."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        metrics: Metrics,
        max_history: int,
        *,
        log_content: bool = False,
    ) -> None:
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.max_history = max_history
        self.log_content = log_content

    async def begin(
        self,
        text: str,
        conversation_id: str | None,
        *,
        owner: str | None = None,
        create_as: str | None = None,
        reply_id: str | None = None,
    ) -> Turn:
        """Store the user's message; raise `ConversationNotFound` for an unknown id.

        `owner` (a key's hash) is checked against the conversation's: another
        owner's conversation is not found, exactly as an unknown one. None
        checks nothing (no API keys: the id is the capability). A new
        conversation gets `create_as` as its id if given, and `owner`; the
        reply gets `reply_id` if given (idempotent requests choose both first).

        A busy engine (`EngineBusy`, 503) is refused first, before anything is stored.
        """
        reservation = reserve(self.engine)
        try:
            return await self._begin(text, conversation_id, owner, create_as, reply_id, reservation)
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise

    def begin_stateless(self, context: Sequence[Message]) -> Turn:
        """A turn on exactly `context`, nothing stored; `EngineBusy` (503) if the engine is full."""
        return dataclasses.replace(Turn.stateless(context), reservation=reserve(self.engine))

    async def _begin(
        self,
        text: str,
        conversation_id: str | None,
        owner: str | None,
        create_as: str | None,
        reply_id: str | None,
        reservation: Reservation | None,
    ) -> Turn:
        now = time.time()
        new = conversation_id is None
        if conversation_id is None:
            conversation_id = create_as or new_conversation_id()
        user_message = Message(new_message_id(), conversation_id, Role.USER, text, now)
        reply_id = reply_id or new_message_id()
        history = await self.store.begin_turn(
            user_message, reply_id, create=new, owner=owner, history_limit=self.max_history
        )
        if self.log_content:
            log.info("user_message", conversation_id=conversation_id, content=text)
        return Turn(
            conversation_id, user_message, reply_id, new, reservation=reservation, history=history
        )

    def store_then_emit(self, emit: EventSink) -> ReplyFinisher:
        """The finisher of a sink that keeps no log: `append_message`, then `emit`."""

        async def finish(event: TurnEvent, reply: Message) -> None:
            await self.store.append_message(reply)
            await emit(event)

        return finish

    async def run(
        self,
        turn: Turn,
        emit: EventSink,
        finish: ReplyFinisher | None = None,
        chunk: ChunkSink | None = None,
        *,
        announced: bool = False,
    ) -> None:
        """Generate the reply, emitting `connected`, `message`…, then `completed` or `error`.

        `announced`: the caller delivered `turn.connected()` itself, as soon as the turn
        began (a reply read through `ReplyHub` sends it with the response's head instead
        of after the engine's first step: two turns of a busy event loop sooner).

        A stored turn's terminal event goes through `finish` with the reply to
        store (default: `store_then_emit(emit)`); a stateless turn's through `emit`.
        `message` events go through `chunk` when given, else through `emit`.
        Cancellation (the client went away) stores the partial reply as
        interrupted and re-raises; engine and store failures become an `error`
        event after the partial reply is stored as failed.
        """
        rid = turn.reply_id
        stored = turn.context is None
        finish = finish or self.store_then_emit(emit)
        base = turn.ids()
        parts: list[str] = []
        started = time.perf_counter()
        first_chunk_at: float | None = None
        outcome = "completed"
        self.metrics.stream_started()
        log.info("turn_started", conversation_id=turn.conversation_id, message_id=rid)
        # No `await` inside an `except` block: compiled (mypyc), a coroutine suspended in a
        # handler leaves its exception as the thread's current one, and another task's
        # compiled code raised it again (a /v1 client that left: the turn's CancelledError
        # came out of the response's task). The handlers note what happened; the awaits follow.
        try:
            cancelled: asyncio.CancelledError | None = None
            failed: tuple[str, str, bool] | None = None
            try:
                if not announced:
                    await emit(turn.connected())
                context: Sequence[Message]
                if turn.context is not None:
                    context = turn.context
                elif turn.history is not None:
                    context = turn.history
                else:
                    context = await self.store.history(turn.conversation_id, limit=self.max_history)
                seq = 0
                result = StreamResult()
                batches_of = open_batches(self.engine, context, result, turn.reservation)
                async with contextlib.aclosing(batches_of) as batches:
                    async for batch in batches:
                        texts = [text for text in batch if text] if "" in batch else batch
                        if not texts:
                            continue
                        if first_chunk_at is None:
                            first_chunk_at = time.perf_counter()
                        if chunk is not None:
                            parts.extend(texts)
                            chunk(seq + 1, texts)
                            seq += len(texts)
                            continue
                        for text in texts:
                            parts.append(text)
                            seq += 1
                            data = {"type": "message", "content": text, **base}
                            await emit(TurnEvent("message", f"{rid}:{seq}", data))
                reply = "".join(parts)
                finish_reason = result.finish_reason or "stop"
                usage = _usage(result, context, reply)
                completed: dict[str, Any] = {
                    "type": "completed",
                    "content": reply,
                    **base,
                    "finish_reason": finish_reason,
                    "usage": usage.to_json(),
                }
                if result.dropped_messages is not None:
                    completed["dropped_messages"] = result.dropped_messages
                event = TurnEvent("completed", f"{rid}:{seq + 1}", completed)
                if stored:
                    meta = {"finish_reason": finish_reason}
                    await finish(event, self._reply(turn, reply, MessageStatus.COMPLETE, meta))
                else:
                    await emit(event)
            except asyncio.CancelledError as exc:
                cancelled = exc
            except ChatError as failure:
                failed = (failure.code, failure.message, failure.retryable)
            except Exception:
                log.exception("turn_failed", conversation_id=turn.conversation_id, message_id=rid)
                failed = ("internal_error", "the reply failed unexpectedly", True)
            if cancelled is not None:
                # The canceller says why: interrupted (nobody came back), cancelled, shutdown.
                args = cancelled.args
                outcome = str(args[0]) if args and args[0] else "interrupted"
                self.metrics.generation_cancelled(outcome)  # hub or not: stateless /v1 too
                error = cancel_error(outcome)
                # Shielded, and waited for through any further cancellation (shutdown, a
                # second canceller): what the user saw must be stored, and before this task
                # ends, or its end would let a next turn begin first and be filed before it.
                # Readers following the log need the terminal event too, or they would wait
                # forever.
                final = asyncio.ensure_future(
                    self._end(
                        turn, parts, MessageStatus.INTERRUPTED, outcome, error, emit, finish, base
                    )
                )
                while not final.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(final)
                final.result()  # its own failure, if any (`_end` logs the store's and goes on)
                try:
                    raise cancelled
                finally:  # as `except ... as` does: a frame holding its own traceback is a cycle
                    cancelled = None
            if failed is not None:
                outcome = "error"
                code, message, retryable = failed
                await self._fail(turn, parts, code, message, retryable, emit, finish, base)
        finally:
            if turn.reservation is not None:
                turn.reservation.release()
            now = time.perf_counter()
            ttft = None if first_chunk_at is None else first_chunk_at - started
            self.metrics.stream_finished(outcome, now - started, ttft, len(parts))
            log.info(
                "turn_finished",
                conversation_id=turn.conversation_id,
                message_id=rid,
                outcome=outcome,
                chunks=len(parts),
                duration_s=round(now - started, 4),
                ttft_s=None if ttft is None else round(ttft, 4),
                **({"content": "".join(parts)} if self.log_content else {}),
            )

    async def _fail(
        self,
        turn: Turn,
        parts: list[str],
        code: str,
        message: str,
        retryable: bool,
        emit: EventSink,
        finish: ReplyFinisher,
        base: dict[str, str],
    ) -> None:
        self.metrics.error(code)
        error = {"code": code, "message": message, "retryable": retryable}
        await self._end(turn, parts, MessageStatus.FAILED, code, error, emit, finish, base)

    async def _end(
        self,
        turn: Turn,
        parts: list[str],
        status: MessageStatus,
        reason: str,
        error: dict[str, Any],
        emit: EventSink,
        finish: ReplyFinisher,
        base: dict[str, str],
    ) -> None:
        """Keep what the user already saw, then send the `error` event that ends the reply.

        A store failure here is logged, not raised: the event goes out all the same.
        """
        event = TurnEvent(
            "error", f"{turn.reply_id}:{len(parts) + 1}", {"type": "error", "error": error, **base}
        )
        if turn.context is None:
            reply = self._reply(turn, "".join(parts), status, {"finish_reason": reason})
            try:
                await finish(event, reply)
                return
            except Exception:
                log.exception("partial_reply_not_stored", conversation_id=turn.conversation_id)
        with contextlib.suppress(Exception):
            await emit(event)

    @staticmethod
    def _reply(turn: Turn, content: str, status: MessageStatus, meta: dict[str, Any]) -> Message:
        return Message(
            turn.reply_id, turn.conversation_id, Role.ASSISTANT, content, time.time(), status, meta
        )
