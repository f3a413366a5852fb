"""`make bench-local`: the local engine under 1, 4 and 10 concurrent chats, next to llama_cpp.server.

Both servers run the same GGUF (SmolLM2-135M-Instruct by default) with the same
window, threads, greedy sampling and reply length, one after the other on this
machine. For each level it reports, per reply, the time to first token (TTFT)
and the decode speed (tokens after the first / time after the first), and, over
the whole level, the aggregate tokens/s. Queue wait is what the engine measured
(`local_generation` log lines); llama_cpp.server does not report one.

llama_cpp.server is started with `--interrupt_requests False`: by default a new
request interrupts the one generating, which would make concurrency meaningless.

    python -m bench.local_bench [--max-tokens 64] [--levels 1,4,10] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROMPTS = [
    "Tell me about the moon.",
    "Write a short poem about bread.",
    "What is a good way to learn to swim?",
    "Describe a busy market in the morning.",
    "Explain why the sky is blue.",
]


@dataclass
class Reply:
    ttft: float
    total: float
    tokens: int

    @property
    def decode_rate(self) -> float | None:
        after_first = self.total - self.ttft
        return (self.tokens - 1) / after_first if self.tokens > 1 and after_first > 0 else None


@dataclass
class Level:
    server: str
    concurrency: int
    replies: int
    wall_s: float
    tokens: int
    aggregate_tokens_per_s: float
    ttft_p50_s: float
    ttft_max_s: float
    decode_tokens_per_s_p50: float | None
    queue_wait_p50_s: float | None = None
    queue_wait_max_s: float | None = None
    errors: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str], log_path: Path, ready_url: str
) -> Iterator[None]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules, fixed arguments
            command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[2]} exited:\n{log_path.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{command[2]} did not start")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def chat_ours(client: httpx.AsyncClient, url: str, prompt: str, _: int) -> Reply:
    started = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    async with client.stream("POST", url + "/chat", json={"message": prompt}) as response:
        response.raise_for_status()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "message" and ttft is None:
                    ttft = time.perf_counter() - started
            elif line.startswith("data: ") and event == "completed":
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            elif line.startswith("data: ") and event == "error":
                raise RuntimeError(line[6:])
    total = time.perf_counter() - started
    return Reply(ttft if ttft is not None else total, total, tokens)


async def chat_llama(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> Reply:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    started = time.perf_counter()
    ttft: float | None = None
    tokens = 0  # llama_cpp.server streams one chunk per token
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                tokens += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    total = time.perf_counter() - started
    return Reply(ttft if ttft is not None else total, total, tokens)


Chat = Callable[[httpx.AsyncClient, str, str, int], Awaitable[Reply]]


async def run_level(name: str, chat: Chat, url: str, concurrency: int, max_tokens: int) -> Level:
    """`concurrency` clients, each sending replies back to back; at least 5 replies in all."""
    per_client = max(2, -(-5 // concurrency))
    replies: list[Reply] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def client_loop(n: int) -> None:
            for i in range(per_client):
                prompt = PROMPTS[(n + i) % len(PROMPTS)]
                try:
                    replies.append(await chat(client, url, prompt, max_tokens))
                except Exception as exc:
                    errors.append(repr(exc))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(n) for n in range(concurrency)))
        wall = time.perf_counter() - started
    tokens = sum(r.tokens for r in replies)
    ttfts = sorted(r.ttft for r in replies) or [0.0]
    rates = [rate for r in replies if (rate := r.decode_rate) is not None]
    return Level(
        server=name,
        concurrency=concurrency,
        replies=len(replies),
        wall_s=round(wall, 3),
        tokens=tokens,
        aggregate_tokens_per_s=round(tokens / wall, 1),
        ttft_p50_s=round(statistics.median(ttfts), 3),
        ttft_max_s=round(ttfts[-1], 3),
        decode_tokens_per_s_p50=round(statistics.median(rates), 1) if rates else None,
        errors=errors,
    )


def queue_waits(log_path: Path, skip: int) -> tuple[list[float], int]:
    lines = log_path.read_text(errors="replace").splitlines()
    waits = []
    for line in lines[skip:]:
        if line.startswith("{") and '"local_generation"' in line:
            waits.append(float(json.loads(line)["queue_wait_s"]))
    return waits, len(lines)


def bench(
    model: Path, levels: list[int], max_tokens: int, context: int, threads: int
) -> list[Level]:
    results: list[Level] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-local-"))
    port = free_port()
    ours_env = {
        "ENGINE": "local",
        "LOCAL_MODEL_PATH": str(model),
        "LOCAL_TEMPERATURE": "0",
        "LOCAL_MAX_TOKENS": str(max_tokens),
        "LOCAL_CONTEXT_SIZE": str(context),
        "LOCAL_THREADS": str(threads),
        "LOCAL_QUEUE_SIZE": str(max(levels) * 2),
        "STORE_URL": "memory://",
        "LOG_LEVEL": "INFO",
    }
    command = [sys.executable, "-m", "uvicorn", "chatbot_sse.main:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "chatbot-sse.log"
    with process(command, ours_env, log_path, url + "/health"):
        asyncio.run(run_level("warm-up", chat_ours, url, 1, 8))
        _, seen = queue_waits(log_path, 0)
        for level in levels:
            result = asyncio.run(run_level("chatbot-sse", chat_ours, url, level, max_tokens))
            waits, seen = queue_waits(log_path, seen)
            if waits:
                result.queue_wait_p50_s = round(statistics.median(waits), 3)
                result.queue_wait_max_s = round(max(waits), 3)
            results.append(result)
            print_level(result)

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--interrupt_requests", "False"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with process(command, {}, tmp / "llama_cpp_server.log", url + "/v1/models"):
        asyncio.run(run_level("warm-up", chat_llama, url, 1, 8))
        for level in levels:
            result = asyncio.run(run_level("llama_cpp.server", chat_llama, url, level, max_tokens))
            results.append(result)
            print_level(result)
    return results


def print_level(level: Level) -> None:
    queue = (
        f"queue p50 {level.queue_wait_p50_s:6.3f}s max {level.queue_wait_max_s:6.3f}s"
        if level.queue_wait_p50_s is not None
        else "queue n/a"
    )
    decode = level.decode_tokens_per_s_p50
    print(
        f"{level.server:17} c={level.concurrency:<3} replies={level.replies:<3} "
        f"agg {level.aggregate_tokens_per_s:6.1f} tok/s  decode p50 "
        f"{decode if decode is not None else float('nan'):6.1f} tok/s  "
        f"TTFT p50 {level.ttft_p50_s:6.3f}s max {level.ttft_max_s:6.3f}s  {queue}"
        + (f"  errors={len(level.errors)}" if level.errors else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    from chatbot_sse.engines._local_model import default_model_path, default_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    parser.add_argument("--levels", default="1,4,10", help="concurrent chats per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--out", type=Path, default=Path("bench/results/local.json"))
    args = parser.parse_args(argv)
    model = args.model or default_model_path()
    levels = [int(n) for n in args.levels.split(",")]
    print(f"model {model.name}, {args.max_tokens} tokens per reply, window {args.context}, "
          f"{args.threads} thread(s), {os.cpu_count()} cores")  # fmt: skip
    results = bench(model, levels, args.max_tokens, args.context, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "model": model.name,
        "max_tokens": args.max_tokens,
        "context": args.context,
        "threads": args.threads,
        "cores": os.cpu_count(),
        "levels": [asdict(level) for level in results],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(level.errors for level in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
