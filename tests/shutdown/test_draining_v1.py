"""SIGTERM: `/v1` completions that cannot finish in DRAIN_SECONDS end cleanly, and
`chatbot-sse serve` (`make run`) drains as long as gunicorn does.

`/v1` has no resume, so instead of `reconnect` a stream ends with an OpenAI error
chunk (`code: "shutdown"`, retryable) and `data: [DONE]`, which the `openai`
package raises as `APIError`; a whole completion gets `503` `shutdown`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import openai
from livesupport import ServerProcess
from shutdownsupport import RawStream

SLOW = [{"role": "user", "content": "/simulate slow"}]


def raw_v1_stream(server: ServerProcess, out: dict[str, Any]) -> None:
    """A stateless streamed completion read with httpx: every `data:` line, in order."""
    body = {"model": "x", "messages": SLOW, "stream": True}
    url = server.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        out["status"] = response.status_code
        out["data"] = [
            line.removeprefix("data: ")
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]


def whole_completion(server: ServerProcess, out: dict[str, Any]) -> None:
    body = {"model": "x", "messages": SLOW}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    out["response"] = response


def test_sigterm_ends_v1_streams_with_a_shutdown_error_and_done(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env = {"STORE_URL": f"sqlite:///{tmp_path}/shared.db", "TOKEN_DELAY": "0.05"}
    draining = start_server("gunicorn", WORKERS="1", DRAIN_SECONDS="2", **env)
    other = start_server("uvicorn", **env)  # reads the history after the first one exits

    raw: dict[str, Any] = {}
    whole: dict[str, Any] = {}
    threads = [
        threading.Thread(target=raw_v1_stream, args=(draining, raw)),
        threading.Thread(target=whole_completion, args=(draining, whole)),
    ]
    client = openai.OpenAI(base_url=draining.url + "/v1", api_key="-", max_retries=0)
    stream = client.chat.completions.create(
        model="x",
        messages=SLOW,
        stream=True,
        extra_body={"conversation_id": "new"},
    )
    said: list[str] = []

    def read_rest() -> None:
        for chunk in chunks:
            said.append(chunk.choices[0].delta.content or "")

    with stream, client:
        chunks = iter(stream)
        first = next(chunks)
        cid = first.model_extra["conversation_id"]  # type: ignore[index]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the other two have started their replies
        started = time.monotonic()
        draining.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        with pytest.raises(openai.APIError) as raised:
            read_rest()
        ended_after = time.monotonic() - started
    for thread in threads:
        thread.join(30)
    assert draining.proc.wait(20) == 0  # type: ignore[union-attr]

    assert raised.value.code == "shutdown"
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["retryable"] is True
    assert 1.5 < ended_after < 10  # at the handoff, not at once and not at the hard deadline

    assert raw["status"] == 200
    error, done = raw["data"][-2:]
    assert done == "[DONE]"
    assert json.loads(error)["error"]["code"] == "shutdown"
    assert all("error" not in json.loads(d) for d in raw["data"][:-2])

    response: httpx.Response = whole["response"]
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutdown"
    assert response.headers["retry-after"] == "1"

    history = httpx.get(f"{other.url}/conversations/{cid}/history", timeout=10).json()
    reply = history["messages"][-1]
    assert reply["role"] == "assistant"
    assert reply["status"] == "interrupted"
    assert reply["content"] == "".join(said)
    assert "".join(said)  # some of it had streamed before the handoff


def test_chatbot_sse_serve_drains_for_drain_seconds_then_hands_off(
    start_server: Callable[..., ServerProcess],
) -> None:
    """`make run` used to give uvicorn 10 s: a DRAIN_SECONDS above that never reached the
    handoff and streams were cut bare. Now the graceful timeout is DRAIN_SECONDS + 7 s."""
    server = start_server("serve", DRAIN_SECONDS="12", TOKEN_DELAY="0.1")  # "slow": 1 s a word
    stream = RawStream(server, "/simulate slow")
    try:
        stream.until(b"event: message")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        events = stream.to_end(timeout=40)
        handed_off_after = time.monotonic() - started
    finally:
        stream.close()
    # uvicorn ends by raising the signal it caught again: a clean exit by SIGTERM.
    assert server.proc.wait(20) in (0, -signal.SIGTERM)  # type: ignore[union-attr]
    assert "Application shutdown complete" in server.log()
    assert events[-1].event == "reconnect", stream.raw[-300:]
    assert 11 < handed_off_after < 18
