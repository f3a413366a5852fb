"""The local engine in-process, with the real model: prompts, usage, cancellation, the queue.

What the prompt really contains is asserted on `engine.last_prompt`, the text
the model read after the chat template was applied.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from chatbot_sse.domain import Message, Role
from chatbot_sse.engines.base import Reservation, StreamResult
from chatbot_sse.errors import EngineBusy
from chatbot_sse.observability.metrics import Metrics
from localsupport import require_local_extra

require_local_extra(module=True)

from chatbot_sse.engines.local import LocalEngine, LocalOptions  # noqa: E402 - needs the extra

pytestmark = pytest.mark.local_model

STORY = "Tell me a long story about a dragon who learns to bake bread."


@pytest.fixture(scope="module")
def model_path() -> Path:
    return require_local_extra()


def options(path: Path, **overrides: object) -> LocalOptions:
    values: dict[str, object] = {
        "temperature": 0.0,
        "max_tokens": 32,
        "context_size": 1024,
        "queue_size": 4,
    }
    return LocalOptions(model_path=path, **{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def engine(model_path: Path) -> AsyncIterator[LocalEngine]:
    engine = LocalEngine(options(model_path))
    await engine.open()
    yield engine
    await engine.close()


def conversation(*texts: str) -> list[Message]:
    roles = [Role.USER, Role.ASSISTANT] * len(texts)
    return [
        Message(f"m{i}", "c" * 32, role, text, 1_700_000_000.0 + i)
        for i, (role, text) in enumerate(zip(roles, texts, strict=False))
    ]


async def reply(engine: LocalEngine, context: Sequence[Message]) -> tuple[str, StreamResult]:
    result = StreamResult()
    chunks = [chunk async for chunk in engine.stream(context, result)]
    return "".join(chunks), result


async def test_second_turn_is_generated_from_the_first(engine: LocalEngine) -> None:
    first_question = "Hello, my name is Ada and I keep bees."
    first, first_usage = await reply(engine, conversation(first_question))
    assert first.strip()
    assert first_question in engine.last_prompt

    context = conversation(first_question, first, "What is my name?")
    second, second_usage = await reply(engine, context)
    assert second.strip()
    prompt = engine.last_prompt
    # The model's own (ChatML) template, with both turns in order, then the assistant's cue.
    turn_1 = f"<|im_start|>user\n{first_question}<|im_end|>"
    answer_1 = f"<|im_start|>assistant\n{first.strip()}"
    turn_2 = "<|im_start|>user\nWhat is my name?<|im_end|>"
    assert prompt.index(turn_1) < prompt.index(answer_1) < prompt.index(turn_2)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert second_usage.prompt_tokens is not None
    assert first_usage.prompt_tokens is not None
    assert second_usage.prompt_tokens > first_usage.prompt_tokens
    assert second_usage.dropped_messages == 0


async def test_usage_and_finish_reason_are_the_models(model_path: Path) -> None:
    engine = LocalEngine(options(model_path, max_tokens=8))
    await engine.open()
    try:
        text, result = await reply(engine, conversation(STORY))
    finally:
        await engine.close()
    assert text
    assert result.finish_reason == "length"
    assert result.completion_tokens == 8
    assert result.prompt_tokens is not None
    assert result.prompt_tokens > 10


async def test_a_short_answer_stops_on_its_own(engine: LocalEngine) -> None:
    _, result = await reply(engine, conversation("Reply with just the word yes."))
    assert result.finish_reason == "stop"
    assert result.completion_tokens is not None
    assert 0 < result.completion_tokens < 32


async def test_temperature_and_a_seed_make_replies_repeat(model_path: Path) -> None:
    engine = LocalEngine(options(model_path, temperature=0.9, seed=1234))
    await engine.open()
    try:
        first = await reply(engine, conversation(STORY))
        second = await reply(engine, conversation(STORY))
    finally:
        await engine.close()
    assert first[0] == second[0]


async def test_cancel_stops_generation_within_a_token(model_path: Path) -> None:
    engine = LocalEngine(options(model_path, max_tokens=400))
    await engine.open()
    try:
        seen: list[str] = []
        streaming = asyncio.Event()

        async def consume() -> None:
            async for chunk in engine.stream(conversation(STORY)):
                seen.append(chunk)
                if len(seen) == 5:
                    streaming.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(streaming.wait(), timeout=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)  # the worker notices the flag before its next token
        stopped_at = engine.generated_tokens
        await asyncio.sleep(0.5)  # ~50 tokens' time at this model's speed
        assert engine.generated_tokens == stopped_at
        assert stopped_at < 5 + 20  # stopped right away, far from max_tokens
        assert (await engine.health())["queue"]["running"] is False
    finally:
        await engine.close()


async def test_context_is_cut_to_the_window_oldest_first(model_path: Path) -> None:
    engine = LocalEngine(options(model_path, context_size=256, max_tokens=16))
    await engine.open()
    filler = "The quick brown fox jumps over the lazy dog. " * 12  # ~120 tokens
    context = conversation("FIRST " + filler, "Noted.", "SECOND " + filler, "Ok.", "Last: hi!")
    try:
        with capture_logs() as logs:
            _, result = await reply(engine, context)
    finally:
        await engine.close()
    prompt = engine.last_prompt
    assert "Last: hi!" in prompt
    assert "FIRST" not in prompt
    assert result.dropped_messages is not None
    assert result.dropped_messages >= 1
    assert result.prompt_tokens is not None
    assert result.prompt_tokens <= 256 - 16
    cut = [entry for entry in logs if entry["event"] == "local_context_cut"]
    assert cut
    assert cut[0]["dropped_messages"] == result.dropped_messages


async def test_a_message_longer_than_the_window_keeps_its_end(model_path: Path) -> None:
    engine = LocalEngine(options(model_path, context_size=128, max_tokens=8))
    await engine.open()
    try:
        long = "word " * 400 + "QUESTION: what is two plus two?"
        _, result = await reply(engine, conversation(long))
    finally:
        await engine.close()
    assert "QUESTION: what is two plus two?" in engine.last_prompt
    assert result.prompt_tokens is not None
    assert result.prompt_tokens <= 128 - 8


async def test_a_full_queue_refuses_before_the_stream(model_path: Path) -> None:
    engine = LocalEngine(options(model_path, queue_size=1, max_tokens=200))
    await engine.open()
    try:
        running = engine.reserve()
        waiting = engine.reserve()
        with pytest.raises(EngineBusy) as refused:
            engine.reserve()
        assert refused.value.status_code == 503
        assert refused.value.retryable
        assert refused.value.retry_after >= 1
        # A stream without a reservation is refused too, at its first step.
        with pytest.raises(EngineBusy):
            await anext(engine.stream(conversation("Hi")))
        waiting.release()
        waiting.release()  # idempotent
        again = engine.reserve()
        del again  # dropped without streaming or releasing: the place comes back
        gc.collect()
        assert (await engine.health())["queue"]["reserved"] == 1
        text, _ = await reply_via(running, conversation("Say hi."))
        assert text
        assert (await engine.health())["queue"] == {
            "running": False,
            "waiting": 0,
            "reserved": 0,
            "capacity": 1,
        }
    finally:
        await engine.close()


async def reply_via(
    reservation: Reservation, context: Sequence[Message]
) -> tuple[str, StreamResult]:
    result = StreamResult()
    return "".join([chunk async for chunk in reservation.stream(context, result)]), result


async def test_replies_wait_their_turn(engine: LocalEngine) -> None:
    """Four replies at once on one model: all complete, one at a time, each with its own text."""
    contexts = [conversation(f"Count from {n} to {n + 5}.") for n in (1, 10, 20, 30)]
    alone = [await reply(engine, context) for context in contexts]
    together = await asyncio.gather(*(reply(engine, context) for context in contexts))
    assert [text for text, _ in together] == [text for text, _ in alone]


async def test_generation_is_measured(model_path: Path) -> None:
    metrics = Metrics()
    engine = LocalEngine(options(model_path, max_tokens=12))
    engine.instrument(metrics)
    await engine.open()
    try:
        await reply(engine, conversation(STORY))
    finally:
        await engine.close()
    text = metrics.render()[0].decode()
    assert 'chatbot_sse_engine_tokens_total{engine="local"} 12.0' in text
    assert 'chatbot_sse_engine_tokens_per_second_count{engine="local"} 1.0' in text
    assert 'chatbot_sse_engine_queue_wait_seconds_count{engine="local"} 1.0' in text


async def test_health_reports_the_model(engine: LocalEngine) -> None:
    state = await engine.health()
    assert state["status"] == "ok"
    assert state["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert state["context_size"] == 1024


async def test_a_missing_model_file_is_refused_at_open(tmp_path: Path) -> None:
    engine = LocalEngine(LocalOptions(model_path=tmp_path / "nope.gguf"))
    with pytest.raises(FileNotFoundError, match="LOCAL_MODEL_PATH"):
        await engine.open()
    assert (await engine.health())["status"] == "closed"
