"""A tiny SSE chat server that follows the wire contract, and breaks it on request.

It is a raw ASGI app run by a real uvicorn on a free port (`serve()`), so the
load tester is tested over real sockets. It counts what it did, so a test can
compare the load tester's numbers with the server's own.

Faults are chosen per request by the message text (so one run can mix them):
`fail500`, `fail429`, `error-event`, `truncate` (stop without `completed`),
`mismatch` (wrong `completed.content`), `reset` (connection dropped mid-reply), `dup-id`, `skip-id`, `stall`
(send `connected`, then nothing), `garbage` (data that is not JSON);
or for every n-th request with `FakeConfig.fail_every`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WORDS = ["Hé", "llo", " wörld", ", ", "stream", "ing", " ✓", " is", " fun", "."]


def reply_chunks(message: str, n: int) -> list[str]:
    """A deterministic reply, with non-ASCII text so byte-exactness is actually tested."""
    start = len(message) % len(WORDS)
    return [WORDS[(start + i) % len(WORDS)] for i in range(n)]


@dataclass
class FakeConfig:
    chunks: int = 6
    chunk_delay: float = 0.0
    first_delay: float = 0.0
    fail_every: int = 0  # every n-th POST /chat answers `fail_status`
    fail_status: int = 500
    drop_history_turn: int | None = None  # history omits this turn (0-based) of each conversation
    resume: bool = True
    ping_first: bool = True
    close_connections: bool = False  # answer every stream with `Connection: close`
    keep_alive_timeout: float = 5.0  # uvicorn closes connections idle this long


@dataclass
class Conversation:
    messages: list[dict[str, Any]] = field(default_factory=list)
    # message_id -> (chunks, seq of completed) for resume
    replies: dict[str, list[str]] = field(default_factory=dict)


class FakeChatServer:
    """The ASGI app. Counters are plain attributes: read them from the test."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.conversations: dict[str, Conversation] = {}
        self.counts: Counter[str] = Counter()
        self.clients: set[tuple[str, int]] = set()  # (address, port): one per connection
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        self.clients.add(tuple(scope["client"]))
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/chat":
            await self.chat(scope, receive, send)
        elif method == "GET" and path.startswith("/conversations/") and path.endswith("/history"):
            await self.history(path.split("/")[2], send)
        elif method == "GET" and path.startswith("/conversations/") and path.endswith("/stream"):
            await self.resume(scope, path.split("/")[2], send)
        elif method == "GET" and path == "/metrics":
            text = "".join(
                f'chatbot_sse_streams_total{{outcome="{k}"}} {v}\n' for k, v in self.counts.items()
            )
            await plain(send, 200, text.encode(), b"text/plain")
        else:
            await plain(send, 404, b'{"error": {"code": "not_found", "message": "no"}}')

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        payload = orjson.loads(body)
        text: str = payload["message"]
        n = next(self._ids)
        self.counts["requests"] += 1
        for name, value in scope["headers"]:
            if name.startswith(b"x-"):
                self.counts[f"header {name.decode()}: {value.decode()}"] += 1
        cfg = self.config
        if text == "fail500" or (cfg.fail_every and n % cfg.fail_every == 0):
            status = 500 if text == "fail500" else cfg.fail_status
            self.counts[f"http_{status}"] += 1
            await plain(send, status, b'{"error": {"code": "boom", "message": "injected"}}')
            return
        if text == "fail429":
            self.counts["http_429"] += 1
            await plain(send, 429, b'{"error": {"code": "rate_limited", "message": "slow down"}}')
            return
        cid = payload.get("conversation_id") or f"{n:032x}"
        conv = self.conversations.setdefault(cid, Conversation())
        mid = f"m{n:08d}"
        chunks = reply_chunks(text, cfg.chunks)
        conv.replies[mid] = chunks
        conv.messages.append({"id": f"u{n}", "role": "user", "content": text})
        await start_sse(send, close=cfg.close_connections)
        await event(send, "connected", f"{mid}:0", {"conversation_id": cid, "message_id": mid},
                    retry=True)  # fmt: skip
        if cfg.ping_first:
            await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
        if text == "stall":
            self.counts["stalled"] += 1
            await asyncio.sleep(3600)
        if cfg.first_delay:
            await asyncio.sleep(cfg.first_delay)
        ok = await self.stream_reply(send, text, cid, mid, chunks, 1)
        if ok:
            conv.messages.append({"id": mid, "role": "assistant", "content": "".join(chunks)})

    async def stream_reply(
        self, send: Send, text: str, cid: str, mid: str, chunks: list[str], first_seq: int
    ) -> bool:
        """Send chunks from `first_seq` on, then the end; True when the reply was whole."""
        ids = {"conversation_id": cid, "message_id": mid}
        seq = first_seq
        for i, chunk in enumerate(chunks[first_seq - 1 :], start=first_seq - 1):
            if self.config.chunk_delay:
                await asyncio.sleep(self.config.chunk_delay)
            if text == "error-event" and i == 2:
                self.counts["error_event"] += 1
                err = {"error": {"code": "engine_error", "message": "injected", "retryable": True}}
                await event(send, "error", f"{mid}:{seq}", {**err, **ids})
                await end(send)
                return False
            if text == "reset" and i == 2:
                raise RuntimeError("injected: uvicorn answers by closing the connection")
            if text == "truncate" and i == 2:
                self.counts["truncated"] += 1
                await end(send)
                return False
            if text == "garbage" and i == 1:
                await send(
                    {"type": "http.response.body", "body": b"event: message\nid: " +
                     f"{mid}:{seq}".encode() + b"\ndata: {not json\n\n", "more_body": True}
                )  # fmt: skip
                await end(send)
                return False
            if text == "dup-id" and i == 2:
                seq -= 1
            if text == "skip-id" and i == 2:
                seq += 1
            await event(send, "message", f"{mid}:{seq}", {"content": chunk, **ids})
            seq += 1
        content = "".join(chunks) + ("!" if text == "mismatch" else "")
        self.counts["completed"] += 1  # before the last event: the client may be done right after
        await event(send, "completed", f"{mid}:{seq}", {"content": content, **ids,
                    "finish_reason": "stop"})  # fmt: skip
        await end(send)
        return text not in {"mismatch", "dup-id", "skip-id"}

    async def resume(self, scope: Scope, cid: str, send: Send) -> None:
        headers = dict(scope["headers"])
        last = headers.get(b"last-event-id", b"").decode()
        conv = self.conversations.get(cid)
        mid, _, seq = last.rpartition(":")
        if not self.config.resume or conv is None or mid not in conv.replies:
            self.counts["resume_404"] += 1
            await plain(send, 404, b'{"error": {"code": "not_found", "message": "no resume"}}')
            return
        self.counts["resumes"] += 1
        await start_sse(send)
        await self.stream_reply(send, "", cid, mid, conv.replies[mid], int(seq) + 1)

    async def history(self, cid: str, send: Send) -> None:
        conv = self.conversations.get(cid)
        if conv is None:
            await plain(send, 404, b'{"error": {"code": "conversation_not_found", "message": "?"}}')
            return
        messages = list(conv.messages)
        drop = self.config.drop_history_turn
        if drop is not None:
            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            if drop < len(users):
                del messages[users[drop] : users[drop] + 2]
        await plain(send, 200, orjson.dumps({"conversation_id": cid, "messages": messages}))


async def plain(send: Send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype)]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def start_sse(send: Send, close: bool = False) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def event(send: Send, name: str, eid: str, data: dict[str, Any], retry: bool = False) -> None:
    data = {"type": name, **data}
    raw = (b"retry: 3000\n" if retry else b"") + (
        f"event: {name}\nid: {eid}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
    )
    await send({"type": "http.response.body", "body": raw, "more_body": True})


async def end(send: Send) -> None:
    await send({"type": "http.response.body", "body": b""})


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` on a real uvicorn in a thread, on a free loopback port; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    keep_alive = getattr(getattr(app, "config", None), "keep_alive_timeout", 5.0)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio",
                            http="httptools", timeout_graceful_shutdown=1,
                            timeout_keep_alive=keep_alive)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
