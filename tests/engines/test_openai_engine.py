"""The openai engine in-process against the fault-injecting upstream: what it sends and reads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fault_upstream import FaultUpstream, reply_for

from chatbot_sse.config import Settings
from chatbot_sse.domain import Message, Role
from chatbot_sse.engines import create_engine
from chatbot_sse.engines._openai_wire import chat_messages, parse_chunk, sse_data
from chatbot_sse.engines.base import StreamResult
from chatbot_sse.engines.openai import OpenAIEngine
from chatbot_sse.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout


def context(*texts: str) -> list[Message]:
    roles = [Role.USER, Role.ASSISTANT]
    return [Message(f"m{i}", "c", roles[i % 2], t, 0.0) for i, t in enumerate(texts)]


@pytest.fixture
def fault() -> Iterator[FaultUpstream]:
    with FaultUpstream() as fake:
        yield fake


def settings(fault: FaultUpstream, **values: Any) -> Settings:
    base = {"store_url": "memory://", "engine": "openai", "openai_base_url": fault.url}
    return Settings(**{**base, "openai_retry_backoff": 0.01, **values})


@pytest.fixture
async def engine(fault: FaultUpstream) -> AsyncIterator[OpenAIEngine]:
    engine = create_engine(settings(fault, openai_first_token_timeout=0.3))
    assert isinstance(engine, OpenAIEngine)
    await engine.open()
    yield engine
    await engine.close()


async def collect(engine: OpenAIEngine, *texts: str, result: StreamResult | None = None) -> str:
    return "".join([chunk async for chunk in engine.stream(context(*texts), result)])


async def test_request_carries_the_settings(fault: FaultUpstream) -> None:
    engine = create_engine(
        settings(
            fault,
            openai_api_key="sk-test",
            openai_model="my-model",
            system_prompt="Be brief.",
            openai_temperature=0.2,
            openai_max_tokens=64,
        )
    )
    assert isinstance(engine, OpenAIEngine)
    await engine.open()
    try:
        text = await collect(engine, "Hi", "Hello!", "Bye")
    finally:
        await engine.close()
    assert text == "".join(reply_for([{"role": "user", "content": "Bye"}]))
    body = fault.requests[-1]
    assert body["model"] == "my-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert fault.headers[-1]["authorization"] == "Bearer sk-test"


async def test_model_defaults_to_the_first_the_upstream_lists(
    engine: OpenAIEngine, fault: FaultUpstream
) -> None:
    assert engine.model == ""
    await collect(engine, "Hi")
    assert fault.requests[-1]["model"] == engine.model == "fault-model"
    assert "temperature" not in fault.requests[-1]


async def test_result_gets_the_upstreams_usage_and_finish_reason(
    engine: OpenAIEngine, fault: FaultUpstream
) -> None:
    fault.mode = "length"
    result = StreamResult()
    await collect(engine, "Hi", result=result)
    words = len(reply_for([{"role": "user", "content": "Hi"}]))
    assert result == StreamResult("length", 1001, 500 + words)


async def test_an_upstream_ignoring_stream_true_still_answers(
    engine: OpenAIEngine, fault: FaultUpstream
) -> None:
    fault.mode = "json"
    result = StreamResult()
    assert await collect(engine, "Hi", result=result) == "".join(
        reply_for([{"role": "user", "content": "Hi"}])
    )
    assert result == StreamResult("stop", 7, 9)


async def test_retries_stop_at_the_limit(engine: OpenAIEngine, fault: FaultUpstream) -> None:
    fault.mode = "status_502"
    with pytest.raises(UpstreamError, match="answered 502: injected 502") as failure:
        await collect(engine, "Hi")
    assert failure.value.retryable
    assert len(fault.requests) == 3  # OPENAI_MAX_RETRIES=2 by default


async def test_client_errors_are_not_retried(engine: OpenAIEngine, fault: FaultUpstream) -> None:
    fault.mode = "status_401"
    with pytest.raises(UpstreamError, match=r"check OPENAI_API_KEY") as failure:
        await collect(engine, "Hi")
    assert not failure.value.retryable
    assert failure.value.status == 401
    assert len(fault.requests) == 1


async def test_rate_limit_honours_retry_after(engine: OpenAIEngine, fault: FaultUpstream) -> None:
    fault.queue("status_429", "status_429")
    started = time.monotonic()
    assert await collect(engine, "Hi")
    assert time.monotonic() - started < 1  # Retry-After: 0, not the exponential backoff
    assert len(fault.requests) == 3


async def test_first_token_timeout_is_retried_then_reported(
    engine: OpenAIEngine, fault: FaultUpstream
) -> None:
    fault.mode = "stall_first"
    with pytest.raises(UpstreamTimeout, match="no first token"):
        await collect(engine, "Hi")
    assert len(fault.requests) == 3
    assert fault.wait_for(lambda f: f.disconnects == 3, timeout=5)  # each attempt was closed


async def test_nothing_is_retried_after_the_first_token(fault: FaultUpstream) -> None:
    engine = create_engine(settings(fault, openai_idle_timeout=0.2))
    await engine.open()
    fault.mode = "stall_mid"
    seen: list[str] = []

    async def read_all() -> None:
        async for chunk in engine.stream(context("Hi")):
            seen.append(chunk)

    try:
        with pytest.raises(UpstreamTimeout, match=r"no chunk from the upstream for 0\.2s"):
            await read_all()
    finally:
        await engine.close()
    assert len(seen) == 3
    assert len(fault.requests) == 1


async def test_unreachable_upstream(fault: FaultUpstream) -> None:
    engine = OpenAIEngine("http://127.0.0.1:9/v1", max_retries=0)
    await engine.open()
    try:
        with pytest.raises(UpstreamError, match="cannot reach the upstream"):
            await collect(engine, "Hi")
        report = await engine.health()
    finally:
        await engine.close()
    assert report["status"] == "unavailable"


async def test_health_is_cached(engine: OpenAIEngine, fault: FaultUpstream) -> None:
    assert (await engine.health())["status"] == "ok"
    fault.models_status = 503
    assert (await engine.health())["status"] == "ok"  # within HEALTH_TTL: not asked again
    engine._health = None  # the TTL has run out
    report = await engine.health()
    assert report == {**report, "status": "unavailable", "error": "status 503"}


async def test_health_before_open() -> None:
    assert (await OpenAIEngine("http://127.0.0.1:9/v1").health())["status"] == "closed"


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeouts must be positive"):
        OpenAIEngine("http://x/v1", idle_timeout=0)
    with pytest.raises(ValueError, match="must not be negative"):
        OpenAIEngine("http://x/v1", max_retries=-1)


# --- the wire format, without a network --------------------------------------------------


def test_chat_messages_drop_empty_and_merge_same_role() -> None:
    messages = chat_messages(context("Hi", "", "Are you there?", "Yes."), "sys")
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Hi\n\nAre you there?"},
        {"role": "assistant", "content": "Yes."},
    ]


async def test_sse_data_follows_the_spec() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": comment", "event: x", "data: a", "data:b", "", "", "id: 1", "data: [DONE]"]:
            yield line

    assert [data async for data in sse_data(lines())] == ["a\nb", "[DONE]"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"choices": "x"}', "malformed choices"),
        ('{"choices": [{"delta": {"content": 5}}]}', "not text"),
    ],
)
def test_malformed_chunks_are_protocol_errors(data: str, error: str) -> None:
    with pytest.raises(UpstreamProtocolError, match=error):
        parse_chunk(data, None)


def test_chunks_without_choices_are_empty() -> None:
    result = StreamResult()
    delta = parse_chunk(
        '{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}', result
    )
    assert (delta.content, delta.finish_reason) == ("", None)
    assert result == StreamResult(None, 3, 4)
