"""The load tester against the real server (main's app in a uvicorn process).

Its counts must agree with the server's own `/metrics`, its multi-turn
history check must pass against the real store, and the `withserver` helper
behind `make load-test` must start a server, run, and stop it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chatbot_sse.loadtest import Run, RunConfig, StreamOptions, summarize
from chatbot_sse.loadtest.withserver import is_listening
from chatbot_sse.loadtest.withserver import main as withserver
from livesupport import ServerProcess, free_port


def streams_counted(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    pattern = r'^chatbot_sse_streams_total\{outcome="(\w+)"\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


async def run(url: str, **kwargs: Any) -> dict[str, Any]:
    stream = StreamOptions(**kwargs.pop("stream", {}))
    return summarize(await Run(RunConfig(url=url, stream=stream, **kwargs)).execute())


async def test_counts_agree_with_the_servers_metrics(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.002")
    before = streams_counted(server.url).get("completed", 0)
    s = await run(server.url, requests=40, concurrency=8, multi_turn=True, turns=2,
                  messages=["hello there", "what is 2 + 2?", "tell me more"])  # fmt: skip
    assert s["failures_by_kind"] == {}
    assert s["requests_completed"] == 40
    assert s["conversations_checked"] == 20
    assert s["conversations_mismatched"] == 0
    assert streams_counted(server.url)["completed"] - before == 40


async def test_drops_are_reported_as_resume_unsupported_or_resumed(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(TOKEN_DELAY="0.005")
    s = await run(server.url, requests=10, concurrency=5, seed=2, stream={"drop_rate": 1.0})
    kinds = s["failures_by_kind"]
    # Until the server offers resume, every drop is `resume_unsupported`; after, none fail.
    assert kinds in ({"resume_unsupported": 10}, {}), kinds
    assert s["drops"] == 10
    assert s["content_mismatches"] == 0


def test_withserver_starts_and_stops_a_server() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "chatbot_sse.loadtest", url, "-n", "6", "-c", "3", "-q"]
    assert (
        withserver(["--url", url, "--response-delay", "0", "--token-delay", "0", "--", *cmd]) == 0
    )
    assert not is_listening("127.0.0.1", port)


@pytest.fixture(autouse=True)
def _needs_the_server() -> None:
    pytest.importorskip("chatbot_sse.main")
