"""The load tester's own ceiling: how many streams it holds, how many events/s it checks.

Not a test: a measurement, to run by hand (`.venv/bin/python bench/loadtest_ceiling.py`).
A load tester is only useful below its own limit, so this drives the real
client (`Run`, with every check on) against a *blaster*: a raw asyncio server
in another process that sends one pre-encoded, contract-conforming reply per
request and does no other work, so the client is the side that saturates.

Scenarios:
- `held`: N concurrent streams (default 2,000), one event every `interval`
  seconds each; passes when all complete and ITL p99 stays near the interval
  (the client keeps up with every stream).
- `held-fast`: the same 2,000 streams at 25 events/s each (50,000 events/s
  offered); passes when ITL p99 stays near 40 ms.
- `burst`: streams whose replies are written in one go (many events per read):
  the ceiling of parse + check, in events/s.
- `per-event`: one write per event with a yield in between (about one event per
  read, like a token stream): the ceiling including one socket read per event.
- `httpx`: the `per-event` load read with httpx + the same parser, no checks,
  to show why the streams do not go through httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

import orjson

MID = "0000018f00000000aaaaaaaaaaaaaaaa"
CID = "c" * 32
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
)


def encode_reply(events: int) -> list[bytes]:
    """One reply as HTTP chunks, one per SSE event: connected, `events` messages, completed."""

    def sse(name: str, seq: int, data: dict[str, Any]) -> bytes:
        body = (
            f"event: {name}\nid: {MID}:{seq}\ndata: ".encode()
            + orjson.dumps({"type": name, **data, "conversation_id": CID, "message_id": MID})
            + b"\n\n"
        )
        return f"{len(body):x}\r\n".encode() + body + b"\r\n"

    words = [f" tok{i}" for i in range(events)]
    out = [sse("connected", 0, {})]
    out += [sse("message", i + 1, {"content": w}) for i, w in enumerate(words)]
    out.append(sse("completed", events + 1, {"content": "".join(words), "finish_reason": "stop"}))
    out.append(b"0\r\n\r\n")
    return out


class Blaster(asyncio.Protocol):
    def __init__(self, reply: list[bytes], mode: str, interval: float) -> None:
        self.reply, self.mode, self.interval = reply, mode, interval
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # Answer only once the whole request is in: closing with unread bytes would send a RST.
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep or self.transport is None:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            self.buf = b""
            asyncio.get_running_loop().create_task(self.send(self.transport))

    async def send(self, transport: asyncio.Transport) -> None:
        if self.mode == "burst":
            transport.write(HEAD + b"".join(self.reply))
        else:
            transport.write(HEAD)
            for chunk in self.reply:
                if transport.is_closing():
                    return
                transport.write(chunk)
                await asyncio.sleep(self.interval)
        transport.close()


def serve(port: int, events: int, mode: str, interval: float) -> None:
    import uvloop

    async def main() -> None:
        reply = encode_reply(events)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Blaster(reply, mode, interval), "127.0.0.1", port, backlog=4096
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_blaster(events: int, mode: str, interval: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(port), "--events", str(events),
           "--mode", mode, "--interval", str(interval)]  # fmt: skip
    proc = subprocess.Popen(cmd)  # noqa: S603 - this very script
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def run_client(url: str, requests: int, concurrency: int, timeout: float) -> dict[str, Any]:
    from chatbot_sse.loadtest import Run, RunConfig, StreamOptions, summarize
    from chatbot_sse.loadtest.cli import run_async

    config = RunConfig(url=url, requests=requests, concurrency=concurrency,
                       stream=StreamOptions(timeout=timeout))  # fmt: skip
    cpu0 = time.process_time()
    result = run_async(Run(config).execute())
    cpu = time.process_time() - cpu0
    s = summarize(result)
    events = sum(r.chunks + 2 for r in result.records if r.ok)
    return {
        "streams": requests,
        "concurrency": concurrency,
        "completed": s["requests_completed"],
        "failures": s["failures_by_kind"],
        "elapsed_s": round(s["elapsed_s"], 3),
        "client_cpu_s": round(cpu, 3),
        "events_per_s": round(events / s["elapsed_s"]),
        "events_per_cpu_s": round(events / cpu) if cpu else None,
        "itl_p50_s": s["itl_s"]["p50"],
        "itl_p99_s": s["itl_s"]["p99"],
        "e2e_p99_s": s["e2e_s"]["p99"],
    }


def run_httpx(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    import httpx

    from chatbot_sse.loadtest.cli import run_async
    from chatbot_sse.loadtest.parser import SSEParser

    async def main() -> int:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
        left = requests
        total = 0
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

            async def worker() -> None:
                nonlocal left, total
                while left > 0:
                    left -= 1
                    parser = SSEParser()
                    async with http.stream("POST", "/chat", json={"message": "hi"}) as resp:
                        async for raw in resp.aiter_raw():
                            total += len(parser.feed(raw))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total

    cpu0, t0 = time.process_time(), time.perf_counter()
    events = run_async(main())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"streams": requests, "concurrency": concurrency, "elapsed_s": round(elapsed, 3),
            "events_per_s": round(events / elapsed), "events_per_cpu_s": round(events / cpu)}  # fmt: skip


def scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name in ("held", "held-fast"):
        # held-fast: the same streams, 25 events/s each: 50,000 events/s offered in all.
        events, interval = (
            (100, 0.04) if name == "held-fast" else (args.held_events, args.held_interval)
        )
        proc, url = start_blaster(events, "interval", interval)
        try:
            time.sleep(0.2)
            out = run_client(url, args.held, args.held, timeout=120)
        finally:
            proc.terminate()
            proc.wait()
        out["interval_s"] = interval
        return out
    mode = "burst" if name == "burst" else "interval"
    proc, url = start_blaster(args.events, mode, 0.0)
    try:
        time.sleep(0.2)
        if name == "httpx":
            return run_httpx(url, args.streams, args.concurrency)
        return run_client(url, args.streams, args.concurrency, timeout=120)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="interval", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=200, help="message events per reply")
    parser.add_argument("--streams", type=int, default=400, help="streams for burst/per-event")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--held", type=int, default=2000, help="concurrent streams to hold")
    parser.add_argument("--held-events", type=int, default=20)
    parser.add_argument("--held-interval", type=float, default=0.5)
    parser.add_argument("--scenarios", default="held,held-fast,burst,per-event,httpx")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.events, args.mode, args.interval)
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    for name in args.scenarios.split(","):
        results[name] = scenario(name, args)
        print(f"{name:10s} {json.dumps(results[name])}", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
