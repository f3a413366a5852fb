"""chatbot-sse's app driven in this process, no sockets: CPU per reply, optionally with parts off.

    STORE_URL=memory:// .venv/bin/python -m bench.inprocess --replies 8000 --concurrency 50
    .venv/bin/python -m bench.inprocess --without engine,middlewares,metrics,logging
    .venv/bin/python -m bench.inprocess --gc-off
    .venv/bin/python -m bench.inprocess --app floor --pace 0.05 --concurrency 1000
    .venv/bin/python -m bench.inprocess --loop asyncio   # asyncio's own loop (default uvloop)
    .venv/bin/python -m bench.inprocess --pushed --pace 0.05 --concurrency 1000

Each reply is `POST /chat` with `message=nice` (22 events) through the app's lifespan, its
middlewares and `ChatbotApp`, as uvicorn would call it, minus HTTP parsing and sockets.
`--without` replaces a part with a no-op to see what it costs: `engine` (the simulated bot's
`compose_reply` returns its answer to "nice" at once), `middlewares` (request context,
security headers, access), `metrics` (every `Metrics` method), `logging` (the turn, hub and
stream loggers). Profilers overstate small calls at this scale (cProfile's overhead, py-spy's
sampling of paused processes); CPU time with a part removed does not. Results are CPU
microseconds per reply of this process (`time.process_time`), after 300 replies of warm-up.
Defaults match `make bench`: RESPONSE_DELAY=0, TOKEN_DELAY=0, LOG_LEVEL=WARNING. `--pace`
sleeps between chunks (TOKEN_DELAY for chatbot-sse, BENCH_PACE for the floor), and `--app
floor` drives `bench.peers.bare_asgi` the same way, for a side-by-side without sockets.
`--pushed` gives each request the `BodyChunks` extension our server's protocols give it, with
every write taken at once: a reply's chunks then go the way they go on a real server (pushed
to the reader by the flush round, its task asleep; two `send`s per reply, the head and the
end), where without it every chunk wakes the response's task and goes through `send`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from typing import Any

PARTS = ("engine", "middlewares", "metrics", "logging")
BODY = b"message=nice"


def _without(parts: set[str]) -> None:
    """Replace each named part with a no-op; must run before the app is imported."""
    if "engine" in parts:
        from chatbot_sse.domain import Message, Role
        from chatbot_sse.engines import simulated

        answer = simulated.compose_reply([Message("m", "c", Role.USER, "nice", 0.0)])
        simulated.compose_reply = lambda context: answer  # type: ignore[assignment]
    if "middlewares" in parts:
        from chatbot_sse.api.access import AccessMiddleware
        from chatbot_sse.api.headers import SecurityHeadersMiddleware
        from chatbot_sse.observability.asgi import RequestContextMiddleware

        async def passthrough(self: Any, scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("state", {})
            await self.app(scope, receive, send)

        for cls in (SecurityHeadersMiddleware, AccessMiddleware, RequestContextMiddleware):
            cls.__call__ = passthrough  # type: ignore[method-assign]
    if "metrics" in parts:
        from chatbot_sse.observability.metrics import Metrics

        for name in dir(Metrics):
            if not name.startswith("_") and callable(getattr(Metrics, name)):
                setattr(Metrics, name, lambda self, *args, **kwargs: None)
    if "logging" in parts:
        from chatbot_sse import replies, turns
        from chatbot_sse.api import streaming

        class Silent:
            def __getattr__(self, name: str) -> Any:
                return lambda *args, **kwargs: None

        for module in (turns, replies, streaming):
            module.log = Silent()  # type: ignore[attr-defined]


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/chat", "raw_path": b"/chat", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(BODY)).encode()),
        ],
    }  # fmt: skip


class _Taken:
    """A `BodyChunks` whose socket takes every write at once (counted, then dropped)."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes = 0

    def write(self, body: bytes) -> bool:
        self.writes += 1
        return True

    async def end(self, send: Any, body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _reply(app: Any, pushed: bool = False) -> tuple[int, int]:
    """One request; the number of `send`s it took, and of writes straight to the socket."""
    sent_body = False
    done = asyncio.Event()
    sends = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal sends
        sends += 1
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = _scope()
    taken = _Taken()
    if pushed:
        from chatbot_sse.body_chunks import BODY_CHUNKS

        scope["extensions"] = {BODY_CHUNKS: taken}
    await app(scope, receive, send)
    return sends, taken.writes


async def _run(
    replies: int, concurrency: int, gc_off: bool, which: str, pushed: bool = False
) -> dict[str, float]:
    if which == "floor":
        from bench.peers.bare_asgi import app
    else:
        from chatbot_sse.main import app

    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await events.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, events.get, lifespan_send
        )
    )
    await started.wait()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> tuple[int, int]:
        async with gate:
            return await _reply(app, pushed)

    await asyncio.gather(*(one() for _ in range(300)))
    if gc_off:
        gc.disable()
    cpu, wall = time.process_time(), time.perf_counter()
    counted = await asyncio.gather(*(one() for _ in range(replies)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await events.put({"type": "lifespan.shutdown"})
    await lifespan
    return {
        "cpu_us_per_reply": 1e6 * cpu / replies,
        "replies_per_s": replies / wall,
        "sends_per_reply": sum(sends for sends, _ in counted) / replies,
        "writes_per_reply": sum(writes for _, writes in counted) / replies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--without", default="", help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--gc-off", action="store_true", help="no garbage collection while timed")
    parser.add_argument("--app", choices=["chatbot_sse", "floor"], default="chatbot_sse")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the event loop to run on"
    )
    parser.add_argument(
        "--pushed", action="store_true", help="body chunks written as our protocols write them"
    )
    args = parser.parse_args()
    parts = set(filter(None, args.without.split(",")))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    os.environ["TOKEN_DELAY"] = os.environ["BENCH_PACE"] = str(args.pace)
    for name, value in (("RESPONSE_DELAY", "0"), ("LOG_LEVEL", "WARNING")):
        os.environ.setdefault(name, value)
    _without(parts)
    run = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        run = uvloop.run
    result = run(_run(args.replies, args.concurrency, args.gc_off, args.app, args.pushed))
    pushed = ", pushed" if args.pushed else ""
    label = f"{args.app} on {args.loop}, pace {args.pace}{pushed}: " + (
        ",".join(sorted(parts)) or "everything on"
    )
    print(
        f"{label}: {result['cpu_us_per_reply']:.0f} us CPU/reply, "
        f"{result['replies_per_s']:.0f} replies/s, {result['sends_per_reply']:.1f} sends/reply"
        + (f", {result['writes_per_reply']:.1f} writes/reply" if args.pushed else "")
    )


if __name__ == "__main__":
    main()
