"""2,000 mostly idle streams held open while normal chats still answer promptly."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable

import httpx
import pytest

from livesupport import ServerProcess

STREAMS = 2000


async def follow(port: int, conversation_id: str) -> asyncio.StreamWriter:
    """Open `GET .../stream` on a raw socket and wait for its first frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /conversations/{conversation_id}/stream HTTP/1.1\r\nHost: test\r\n\r\n".encode()
    )
    await writer.drain()
    received = b""
    while b"event: connected" not in received:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("stream closed early")
        received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    return writer


async def first_event_seconds(url: str) -> float:
    """Seconds from sending a chat to its first `message` event."""
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url + "/chat", data={"message": "hello"}) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event: message"):
                return time.monotonic() - started
    raise AssertionError("no message event")


def test_two_thousand_idle_streams_leave_chats_prompt(
    start_server: Callable[..., ServerProcess],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < STREAMS + 200:
        if hard < STREAMS + 200:
            pytest.skip(f"needs {STREAMS + 200} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (STREAMS + 200, hard))
    # `/simulate slow` streams at 10 x TOKEN_DELAY: one event every 3 s, nearly idle.
    server = start_server(TOKEN_DELAY="0.3", KEEPALIVE_SECONDS="5", LOG_LEVEL="WARNING")

    async def scenario() -> list[float]:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "POST", server.url + "/chat", data={"message": "/simulate slow"}
            ) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    conversation_id = json.loads(line[6:])["conversation_id"]
                    break
            writers: list[asyncio.StreamWriter] = []
            for _wave in range(STREAMS // 200):  # connect in waves, as users arrive
                batch = [follow(server.port, conversation_id) for _ in range(200)]
                writers += await asyncio.gather(*batch)
            assert len(writers) == STREAMS
            # While they are all held open, normal chats answer promptly.
            timings = [await first_event_seconds(server.url) for _ in range(5)]
            health = await client.get(server.url + "/health")
            assert health.status_code == 200
            for writer in writers:
                writer.close()
            return timings

    timings = asyncio.run(scenario())
    assert max(timings) < 1.0, timings
    metrics = httpx.get(server.url + "/metrics").text
    assert 'chatbot_sse_resumes_total{source="live"} 2000.0' in metrics
