"""The local model and the OpenAI protocol, both ways.

- downstream: OpenAI's own client against this server's `/v1`, backed by `ENGINE=local`;
- upstream: this server with `ENGINE=openai` in front of `python -m llama_cpp.server`
  serving the same GGUF file, started here on a free port.

Both need the `/v1` API and the openai engine; until those exist the tests skip.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from livesupport import ServerProcess, die_with_parent, free_port, post_chat
from localsupport import require_local_extra

pytestmark = pytest.mark.local_model

StartServer = Callable[..., ServerProcess]
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture
def model_path() -> Path:
    return require_local_extra()


def test_openai_client_against_v1_backed_by_the_model(
    start_server: StartServer, model_path: Path
) -> None:
    pytest.importorskip("chatbot_sse.api.openai_compat", reason="the /v1 API has not landed")
    openai = pytest.importorskip("openai")
    server = start_server(
        ENGINE="local", LOCAL_TEMPERATURE="0", LOCAL_MAX_TOKENS="24", LOCAL_CONTEXT_SIZE="1024"
    )
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert MODEL_ID in [model.id for model in client.models.list()]

    messages = [
        {"role": "user", "content": "Hello, my name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
        {"role": "user", "content": "What is my name?"},
    ]
    whole = client.chat.completions.create(model=MODEL_ID, messages=messages)
    text = whole.choices[0].message.content
    assert text
    assert text.strip()
    assert whole.choices[0].finish_reason in {"stop", "length"}
    assert whole.usage is not None
    assert 0 < whole.usage.completion_tokens <= 24
    assert whole.usage.prompt_tokens > 20  # the template and all three messages: real tokens

    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # temperature 0: the same reply, streamed
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


@pytest.fixture
def llama_cpp_server(model_path: Path, tmp_path: Path) -> Iterator[str]:
    """`python -m llama_cpp.server` on the same GGUF, on a free port; its `/v1` URL."""
    pytest.importorskip("chatbot_sse.engines.openai", reason="the openai engine has not landed")
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    port = free_port()
    log_path = tmp_path / "llama_cpp_server.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"]
        command += ["--n_threads", "1", "--n_threads_batch", "1"]
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited:\n{log_path.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_chained_in_front_of_llama_cpp_server(
    start_server: StartServer, llama_cpp_server: str
) -> None:
    server = start_server(
        ENGINE="openai",
        OPENAI_BASE_URL=llama_cpp_server,
        OPENAI_TEMPERATURE="0",
        OPENAI_MAX_TOKENS="24",
    )
    first = post_chat(server.url, timeout=60, json={"message": "Hello, my name is Ada."})
    assert first.status == 200
    assert first.events[0].event == "connected"
    assert first.last.event == "completed", first.raw[-500:]
    text = "".join(e.data["content"] for e in first.of("message"))
    assert text.strip()
    done = first.last.data
    assert done["content"] == text
    assert done["finish_reason"] in {"stop", "length"}
    assert 0 < done["usage"]["completion_tokens"] <= 24  # the upstream's own count
    cid = done["conversation_id"]

    second = post_chat(
        server.url, timeout=60, json={"message": "What is my name?", "conversation_id": cid}
    )
    assert second.last.event == "completed", second.raw[-500:]
    assert second.last.data["content"].strip()
    # The upstream was sent both turns: its prompt count grew by more than the new question.
    assert second.last.data["usage"]["prompt_tokens"] > done["usage"]["prompt_tokens"] + 10


def test_v1_is_a_503_with_retry_after_when_the_model_is_busy(
    start_server: StartServer, model_path: Path
) -> None:
    pytest.importorskip("chatbot_sse.api.openai_compat", reason="the /v1 API has not landed")
    server = start_server(
        ENGINE="local", LOCAL_TEMPERATURE="0", LOCAL_MAX_TOKENS="300", LOCAL_QUEUE_SIZE="0"
    )
    story = {"message": "Tell me a long story about a dragon who learns to bake bread."}
    with httpx.stream("POST", server.url + "/chat", json=story, timeout=60) as busy:
        lines = busy.iter_lines()
        while not next(lines).startswith("event: message"):
            pass  # the model is generating now
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}
        refused = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=10)
        streamed = httpx.post(
            server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=10
        )
    for response in (refused, streamed):
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "engine_busy"
        assert response.json()["error"]["type"] == "server_error"
