"""A fault-injecting OpenAI-compatible upstream: a real HTTP/1.1 server on a free port.

Raw asyncio in a thread of its own (with its own event loop), so that it
neither shares tasks with the code under test nor needs a process: the tests
tell it what to do next (`mode`, `queue`) and read what it saw (`requests`,
`disconnects`). It speaks just enough HTTP/1.1 for httpx: Content-Length
request bodies, chunked responses, keep-alive.

Modes, for `POST /v1/chat/completions`:

    ok            a reply streamed word by word, a usage chunk, then [DONE]
    slow          the same, 50 ms between words (a client can leave mid-reply)
    length        ok, but finish_reason "length"
    json          a whole `chat.completion`, ignoring `stream: true`
    stall_headers never answers at all
    stall_first   headers and a role-only chunk, then silence
    stall_mid     three words, then silence
    status_NNN    that HTTP status with an OpenAI-style error body (429: Retry-After: 0)
    garbage       a 200 event stream whose data is not JSON
    close_early   three words, then a properly ended body: no finish_reason, no [DONE]
    truncate      three words, then the socket closes mid-body
    embedded_error three words, then `data: {"error": ...}`
    flood         FLOOD_CHUNKS chunks of FLOOD_CHUNK_CHARS characters, as fast as possible

`GET /v1/models` lists `fault-model`, or answers `models_status` if that is not 200.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
import time
from typing import Any

REPLY = "You said {text!r}; here is the upstream's considered reply, word by word."
PROMPT_TOKENS_BASE = 1000  # usage numbers no estimate would produce, so tests can tell
COMPLETION_TOKENS_BASE = 500
FLOOD_CHUNKS = 320  # x FLOOD_CHUNK_CHARS: more than loopback's socket buffers hold (~3 MB)
FLOOD_CHUNK_CHARS = 20_000
_WORDS = re.compile(r"\s*\S+")


def reply_for(messages: list[dict[str, Any]]) -> list[str]:
    """The deterministic reply to a conversation: it quotes the last user message."""
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return _WORDS.findall(REPLY.format(text=last))


class FaultUpstream:
    def __init__(self) -> None:
        self.mode = "ok"
        self.models_status = 200
        self.requests: list[dict[str, Any]] = []  # chat request bodies, in order
        self.headers: list[dict[str, str]] = []  # their headers, lower-cased names
        self.disconnects = 0
        self._queue: collections.deque[str] = collections.deque()
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL, as `OPENAI_BASE_URL` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(5)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultUpstream:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def queue(self, *modes: str) -> None:
        """The next requests take these modes, in order; then `mode` again."""
        self._queue.extend(modes)

    def wait_for(self, condition: Any, timeout: float = 10) -> bool:
        """Wait until `condition(self)` holds (checked whenever a request starts or ends)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection should close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in header_lines if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "GET" and path.endswith("/models"):
            if self.models_status != 200:
                await _send_json(writer, self.models_status, {"error": {"message": "down"}})
            else:
                models = {"object": "list", "data": [{"id": "fault-model", "object": "model"}]}
                await _send_json(writer, 200, models)
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            await _send_json(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        payload = json.loads(body)
        self.requests.append(payload)
        self.headers.append(headers)
        mode = self._queue.popleft() if self._queue else self.mode
        self._notify()
        try:
            return await self._answer(mode, payload, reader, writer)
        except ConnectionError:
            self._disconnected()
            return False

    def _disconnected(self) -> None:
        self.disconnects += 1
        self._notify()

    async def _until_disconnect(self, reader: asyncio.StreamReader) -> bool:
        """Wait for the client to close the connection; that is the observation tests want."""
        while await reader.read(65536):
            pass
        self._disconnected()
        return False

    async def _answer(
        self,
        mode: str,
        payload: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if mode == "stall_headers":
            return await self._until_disconnect(reader)
        if mode.startswith("status_"):
            status = int(mode.removeprefix("status_"))
            extra = {"Retry-After": "0"} if status == 429 else {}
            error = {"message": f"injected {status}", "type": "server_error", "code": None}
            await _send_json(writer, status, {"error": error}, extra)
            return True
        words = reply_for(payload["messages"])
        if mode == "flood":
            words = [f" {index:05d}" + "x" * FLOOD_CHUNK_CHARS for index in range(FLOOD_CHUNKS)]
        model = payload.get("model", "fault-model")
        if mode == "json":
            await _send_json(writer, 200, _completion(model, "".join(words)))
            return True
        await _start_stream(writer)
        await _data(writer, _chunk(model, {"role": "assistant", "content": ""}))
        if mode == "stall_first":
            return await self._until_disconnect(reader)
        if mode == "garbage":
            await _write_chunk(writer, b"data: {this is not json\n\n")
            await _end(writer)
            return True
        cut = mode in ("stall_mid", "close_early", "truncate", "embedded_error")
        paced = mode == "slow" or str(model).endswith("-paced")
        delay = 0.05 if mode == "slow" else 0.02 if paced else 0.0
        for index, word in enumerate(words[:3] if cut else words):
            if index and delay:
                await asyncio.sleep(delay)
            await _data(writer, _chunk(model, {"content": word}))
            if reader.at_eof():
                self._disconnected()
                return False
        if mode == "stall_mid":
            return await self._until_disconnect(reader)
        if mode == "close_early":
            await _end(writer)
            return True
        if mode == "truncate":
            writer.transport.abort()
            return False
        if mode == "embedded_error":
            await _data(writer, {"error": {"message": "injected mid-stream failure", "code": 500}})
            await _end(writer)
            return True
        finish = "length" if mode == "length" else "stop"
        await _data(writer, _chunk(model, {}, finish))
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": PROMPT_TOKENS_BASE + len(payload["messages"]),
                "completion_tokens": COMPLETION_TOKENS_BASE + len(words),
            }
            await _data(writer, {**_chunk(model, {}), "choices": [], "usage": usage})
        await _write_chunk(writer, b"data: [DONE]\n\n")
        await _end(writer)
        return True


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16},
    }


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


async def _send_json(
    writer: asyncio.StreamWriter,
    status: int,
    body: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> None:
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(data)),
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()


async def _start_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    await writer.drain()


async def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def _data(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    await _write_chunk(writer, b"data: " + json.dumps(payload).encode() + b"\n\n")


async def _end(writer: asyncio.StreamWriter) -> None:
    writer.write(b"0\r\n\r\n")
    await writer.drain()
