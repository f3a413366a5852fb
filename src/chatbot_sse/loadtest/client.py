"""One chat turn as a user feels it: send a message, stream the reply, check it, time it.

Every reply is checked against the wire contract (DESIGN.md), because a load
test that counts broken replies as successes measures nothing:
- event ids are `<message_id>:<seq>`, seq 0 for `connected` and +1 per event,
  so any event seen twice or missing shows as a gap or repeat;
- the `message` contents joined equal `completed.content` exactly;
- the stream ends with `completed` (or `error`, which is a failure) and nothing follows.

Timings follow LLM-serving benchmarks: TTFT is the time from sending the
request to the first `message` chunk, ITL the gaps between chunks, e2e the
time to `completed`. A chaos drop closes the socket mid-reply and resumes with
`Last-Event-ID`; the reconnect gap counts as an ITL sample because a user waits through it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson

from chatbot_sse.loadtest.parser import SSEParser
from chatbot_sse.loadtest.timeline import Timeline
from chatbot_sse.loadtest.transport import Exchange, Pool, Target, build_request, open_exchange

__all__ = ["StreamOptions", "StreamRecord", "TurnResult", "run_turn"]

# Failure kinds (the keys of `failures_by_kind`), besides `http_<status>`.
ERROR_EVENT = "error_event"
TIMEOUT = "timeout"
PROTOCOL = "protocol"
CONNECTION = "connection"
RESUME_UNSUPPORTED = "resume_unsupported"
HISTORY_MISMATCH = "history_mismatch"


@dataclass(slots=True)
class StreamOptions:
    """Per-stream settings shared by every stream of a run."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    timeout: float = 60.0
    drop_rate: float = 0.0
    slow_reader: bool = False
    read_pause: float = 0.02
    max_resumes: int = 3
    keep_alive: bool = True  # reuse connections between streams (never for a slow reader)


@dataclass(slots=True)
class StreamRecord:
    """Everything measured about one stream; the JSON `records` are these, as dicts."""

    index: int
    user: int  # closed loop: the virtual user's slot; open loop: -1
    session: int
    turn: int
    started_s: float  # since the run started
    ok: bool = False
    kind: str | None = None
    reason: str | None = None
    detail: str = ""
    status: int = 0
    connect_s: float | None = None
    connected_s: float | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    chunks: int = 0
    bytes: int = 0
    pings: int = 0
    drops: int = 0
    resumes: int = 0
    conversation_id: str | None = None
    message_id: str | None = None

    def fail(self, kind: str, detail: str, reason: str | None = None) -> None:
        if self.kind is None:  # the first failure is the cause; later ones are its echoes
            self.ok = False
            self.kind, self.detail, self.reason = kind, detail, reason


@dataclass(slots=True)
class TurnResult:
    record: StreamRecord
    reply: str | None  # the completed content, for the history check


class _Turn:
    """The sink of one stream's responses (the POST, then any resumes): checks and timings."""

    def __init__(self, record: StreamRecord, t0: float, timeline: Timeline, drop_at: int) -> None:
        self.rec = record
        self.t0 = t0
        self.timeline = timeline
        self.drop_at = drop_at  # drop after this many chunks; 0 = never
        self.parser = SSEParser()
        self.parts: list[str] = []
        self.next_seq = 0
        self.last_id = ""
        self.last_chunk_at = 0.0
        self.finished = False
        self.dropping = False
        self.error_body = b""
        self.http_ok = False
        self.reply: str | None = None
        self.exchange: Exchange | None = None  # the connection in use, closed on any way out

    # ResponseSink ------------------------------------------------------------
    def on_head(self, status: int, headers: dict[str, str]) -> bool:
        self.rec.status = status
        self.http_ok = status == 200
        if self.http_ok and not headers.get("content-type", "").startswith("text/event-stream"):
            self.rec.fail(PROTOCOL, f"content-type {headers.get('content-type')!r}", "not_sse")
            return True
        return False

    def on_body(self, data: bytes) -> bool:
        if not self.http_ok:
            self.error_body += data[: 4096 - len(self.error_body)]
            return False
        now = time.perf_counter()
        self.rec.bytes += len(data)
        before = self.rec.chunks
        stop = False
        for event in self.parser.feed(data):
            if self.finished:
                self.rec.fail(PROTOCOL, f"event {event.type!r} after the end", "after_end")
                stop = True
                break
            if not self._check_id(event.id):
                stop = True
                break
            etype = event.type
            if etype == "message":
                if not self._on_message(event.data, now):
                    stop = True
                    break
                if self.rec.chunks == self.drop_at:
                    self.dropping = True
                    stop = True
                    break
            elif etype == "connected":
                self._on_connected(event.data, now)
            elif etype == "completed":
                self._on_completed(event.data, now)
            elif etype == "error":
                self._on_error(event.data)
                stop = True
        if self.rec.chunks != before:
            self.timeline.chunks(now, self.rec.chunks - before)
        return stop or (self.rec.kind is not None)

    # checks ------------------------------------------------------------------
    def _check_id(self, event_id: str) -> bool:
        mid, _, seq_text = event_id.rpartition(":")
        if not seq_text.isdigit() or not mid:
            self.rec.fail(PROTOCOL, f"event id {event_id!r} is not <message_id>:<seq>", "bad_id")
            return False
        seq = int(seq_text)
        if self.rec.message_id is None:
            self.rec.message_id = mid
        elif mid != self.rec.message_id:
            self.rec.fail(PROTOCOL, f"event id {event_id!r} of another message", "bad_id")
            return False
        if seq != self.next_seq:
            reason = "duplicate_id" if seq < self.next_seq else "missing_id"
            self.rec.fail(PROTOCOL, f"event id {event_id!r}, expected seq {self.next_seq}", reason)
            return False
        self.next_seq = seq + 1
        self.last_id = event_id
        return True

    def _json(self, data: bytes) -> dict[str, Any] | None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self.rec.fail(PROTOCOL, f"data is not a JSON object: {data[:80]!r}", "bad_event")
            return None
        return obj

    def _on_connected(self, data: bytes, now: float) -> None:
        obj = self._json(data)
        if obj is None:
            return
        self.rec.connected_s = now - self.t0
        self.rec.conversation_id = obj.get("conversation_id")

    def _on_message(self, data: bytes, now: float) -> bool:
        obj = self._json(data)
        content = obj.get("content") if obj is not None else None
        if not isinstance(content, str):
            self.rec.fail(PROTOCOL, "message event without string content", "bad_event")
            return False
        self.parts.append(content)
        rec = self.rec
        if rec.chunks == 0:
            rec.ttft_s = now - self.t0
        else:
            rec.itl_s.append(now - self.last_chunk_at)
        self.last_chunk_at = now
        rec.chunks += 1
        return True

    def _on_completed(self, data: bytes, now: float) -> None:
        self.finished = True
        obj = self._json(data)
        if obj is None:
            return
        content = obj.get("content")
        joined = "".join(self.parts)
        if content != joined:
            self.rec.fail(
                PROTOCOL,
                f"chunks join to {len(joined)} chars, completed.content has "
                f"{len(content) if isinstance(content, str) else content!r}",
                "content_mismatch",
            )
            return
        self.rec.e2e_s = now - self.t0
        self.rec.ok = True
        self.reply = joined

    def _on_error(self, data: bytes) -> None:
        self.finished = True
        obj = self._json(data) or {}
        err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        assert isinstance(err, dict)
        self.rec.fail(ERROR_EVENT, f"{err.get('code')}: {err.get('message')}", err.get("code"))

    def http_failure(self) -> None:
        detail = self.error_body.decode("utf-8", "replace").strip()[:300]
        self.rec.fail(f"http_{self.rec.status}", detail)


async def run_turn(
    target: Target,
    opts: StreamOptions,
    timeline: Timeline,
    record: StreamRecord,
    message: str,
    conversation_id: str | None,
    rng: random.Random,
    pool: Pool | None = None,
) -> TurnResult:
    """Run one turn to its end (or timeout) and return its filled-in record.

    With a `pool`, the turn's connections come from it and the last one goes back to it."""
    drop_at = rng.randint(1, 8) if opts.drop_rate and rng.random() < opts.drop_rate else 0
    payload: dict[str, Any] = {"message": message}
    if conversation_id:
        payload["conversation_id"] = conversation_id
    body = orjson.dumps(payload)
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        *opts.headers,
    ]
    t0 = time.perf_counter()
    turn = _Turn(record, t0, timeline, drop_at)
    rcvbuf = 4096 if opts.slow_reader else None
    pause = opts.read_pause if opts.slow_reader else 0.0
    timeline.started(t0)
    try:
        async with asyncio.timeout(opts.timeout):
            request = build_request(
                target, "POST", "/chat", headers, body, keep_alive=pool is not None
            )
            exchange, record.connect_s = await open_exchange(
                target, request, turn, read_pause=pause, rcvbuf=rcvbuf, pool=pool
            )
            turn.exchange = exchange
            await exchange.done
            _raise_transport_error(exchange, record)
            while turn.dropping and record.kind is None:
                if record.resumes >= opts.max_resumes:
                    break
                turn.dropping = False
                record.drops += 1
                await _resume(target, opts, turn, pause, rcvbuf, pool)
    except TimeoutError:
        record.fail(TIMEOUT, f"no end of reply within {opts.timeout:g} s")
    except OSError as exc:
        record.fail(CONNECTION, f"{type(exc).__name__}: {exc}")
    finally:
        if turn.exchange is not None:
            if pool is None:
                turn.exchange.close()
            else:  # kept if its response ended cleanly, else closed
                pool.give(turn.exchange)
    if record.kind is None and turn.rec.status and not turn.http_ok:
        turn.http_failure()
    if record.kind is None and not record.ok:
        record.fail(PROTOCOL, "stream ended without `completed`", "missing_completed")
    record.pings += turn.parser.comments
    timeline.finished(time.perf_counter(), record.ok)
    return TurnResult(record, turn.reply if record.ok else None)


def _raise_transport_error(exchange: Exchange, record: StreamRecord) -> None:
    """A reset (before or mid-reply) is a `connection` failure; malformed HTTP is `protocol`."""
    error = exchange.error
    if error is None:
        return
    if isinstance(error, httptools.HttpParserError):
        record.fail(PROTOCOL, f"malformed HTTP response: {error}", "bad_http")
        return
    where = "mid-reply" if exchange.head_received else "before a response"
    raise ConnectionError(f"{type(error).__name__} {where}: {error}")


async def _resume(
    target: Target,
    opts: StreamOptions,
    turn: _Turn,
    pause: float,
    rcvbuf: int | None,
    pool: Pool | None,
) -> None:
    """Reconnect with `Last-Event-ID` and keep feeding the same checks."""
    record = turn.rec
    if not record.conversation_id:
        record.fail(PROTOCOL, "dropped before `connected` gave a conversation id", "bad_event")
        return
    headers = [
        ("Accept", "text/event-stream"),
        ("Last-Event-ID", turn.last_id),
        *opts.headers,
    ]
    path = f"/conversations/{record.conversation_id}/stream"
    record.pings += turn.parser.comments
    turn.parser = SSEParser()  # a new response is a new event stream
    record.resumes += 1
    request = build_request(target, "GET", path, headers, b"", keep_alive=pool is not None)
    exchange, _ = await open_exchange(
        target, request, turn, read_pause=pause, rcvbuf=rcvbuf, pool=pool
    )
    turn.exchange = exchange
    await exchange.done
    _raise_transport_error(exchange, record)
    if record.status in (404, 405, 501):
        record.fail(RESUME_UNSUPPORTED, f"GET {path} answered {record.status}")
    elif not turn.http_ok:
        turn.http_failure()
