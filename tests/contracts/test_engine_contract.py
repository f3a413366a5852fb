"""The Engine contract: what the turn service relies on, checked against every engine.

Each engine is a parameter of `make_engine`: a fixture named
`<engine>_engine_factory` returning `factory(paced) -> Engine`. `paced=False`
should answer as fast as the engine can; `paced=True` must take long enough
between chunks (tens of milliseconds) that a test can cancel mid-stream. To add
an engine (openai against a fault-injecting fake upstream, local with a tiny
model), add such a fixture and its name to `ENGINES`.

Also here: the registry (`create_engine`) that turns `Settings` into an engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fault_upstream import FaultUpstream

from chatbot_sse.config import Settings
from chatbot_sse.domain import Message, Role
from chatbot_sse.engines import BUILTIN_ENGINES, Engine, create_engine
from chatbot_sse.engines.base import StreamResult, open_stream

EngineFactory = Callable[[bool], Engine]

ENGINES = ["simulated", "openai", "local"]


def make_settings(**values: Any) -> Settings:
    """Explicit values, so the tests don't depend on the environment they run in."""
    return Settings(**{"store_url": "memory://", **values})


@pytest.fixture
def simulated_engine_factory() -> EngineFactory:
    def factory(paced: bool) -> Engine:
        delay = 0.02 if paced else 0.0
        settings = make_settings(engine="simulated", response_delay=delay, token_delay=delay)
        return create_engine(settings)

    return factory


@pytest.fixture
def local_engine_factory() -> EngineFactory:
    """The real local model (SmolLM2-135M), greedy so replies repeat; short replies keep it quick."""
    from localsupport import require_local_extra

    require_local_extra()

    def factory(paced: bool) -> Engine:
        # The model itself paces: some 10 ms per token here, enough to cancel mid-stream.
        settings = make_settings(
            engine="local",
            local_temperature=0,
            local_max_tokens=48 if paced else 24,
            local_context_size=1024,
            local_queue_size=16,
        )
        return create_engine(settings)

    return factory


@pytest.fixture(scope="module")
def fault_upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream() as upstream:
        yield upstream


@pytest.fixture
def openai_engine_factory(fault_upstream: FaultUpstream) -> EngineFactory:
    """The openai engine against a real (fault-injecting, here well-behaved) upstream.

    The upstream paces its words when the model name ends in `-paced`.
    """

    def factory(paced: bool) -> Engine:
        model = "fault-model-paced" if paced else "fault-model"
        settings = make_settings(
            engine="openai", openai_base_url=fault_upstream.url, openai_model=model
        )
        return create_engine(settings)

    return factory


@pytest.fixture(params=ENGINES)
def make_engine(request: pytest.FixtureRequest) -> EngineFactory:
    factory: EngineFactory = request.getfixturevalue(f"{request.param}_engine_factory")
    return factory


@pytest.fixture
async def engine(make_engine: EngineFactory) -> AsyncIterator[Engine]:
    engine = make_engine(False)
    await engine.open()
    yield engine
    await engine.close()


@pytest.fixture
async def paced_engine(make_engine: EngineFactory) -> AsyncIterator[Engine]:
    engine = make_engine(True)
    await engine.open()
    yield engine
    await engine.close()


def conversation(*texts: str) -> list[Message]:
    """Alternating user / assistant messages, ending with the user's: as the turn service builds."""
    roles = [Role.USER, Role.ASSISTANT] * len(texts)
    return [
        Message(f"m{i}", "c" * 32, role, text, 1_700_000_000.0 + i)
        for i, (role, text) in enumerate(zip(roles, texts, strict=False))
    ]


CONTEXT = conversation(
    "Hello, my name is Ada.",
    "Nice to meet you, Ada!",
    "Tell me a story, please.",
)


async def collect(engine: Engine, context: Sequence[Message]) -> list[str]:
    return [chunk async for chunk in engine.stream(context)]


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_is_an_engine(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    assert isinstance(engine.name, str)
    assert engine.name


async def test_stream_yields_text_chunks(engine: Engine) -> None:
    chunks = await collect(engine, CONTEXT)
    assert chunks
    assert all(isinstance(chunk, str) for chunk in chunks)
    assert "".join(chunks).strip()


async def test_fills_a_stream_result_when_it_takes_one(engine: Engine) -> None:
    """`completed` carries the engine's finish reason and usage when it reports them."""
    result = StreamResult()
    chunks = [chunk async for chunk in open_stream(engine, CONTEXT, result)]
    assert chunks
    if "result" in inspect.signature(engine.stream).parameters:
        assert result.finish_reason in {"stop", "length"}  # a real model may hit its max tokens
        assert result.completion_tokens is None or result.completion_tokens > 0
        assert result.prompt_tokens is None or result.prompt_tokens > 0
    else:
        assert result == StreamResult()


async def test_answers_a_single_message(engine: Engine) -> None:
    assert "".join(await collect(engine, conversation("Hi!"))).strip()


async def test_same_context_same_reply(engine: Engine) -> None:
    assert await collect(engine, CONTEXT) == await collect(engine, CONTEXT)


async def test_concurrent_streams_do_not_interfere(engine: Engine) -> None:
    contexts = [CONTEXT, conversation("What is 12 * 7?"), conversation("Hello")]
    alone = [await collect(engine, context) for context in contexts]
    together = await asyncio.gather(*(collect(engine, context) for context in contexts * 3))
    assert together == alone * 3


async def test_cancelling_the_consumer_mid_stream(paced_engine: Engine) -> None:
    """The turn service's task is cancelled when the client goes away: the engine must
    let the CancelledError through and leave nothing running behind it."""
    chunks: list[str] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for chunk in paced_engine.stream(CONTEXT):
            chunks.append(chunk)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert chunks
    await asyncio.sleep(0)
    assert not other_tasks()
    # and the engine still works afterwards
    assert "".join(await collect(paced_engine, conversation("Hi!")))


async def test_cancelling_between_chunks_then_closing(paced_engine: Engine) -> None:
    """Cancelled while the consumer awaits something else (sending an event), the stream
    is left suspended at a `yield`; closing it must finish cleanly, not hang or raise."""
    first = asyncio.Event()
    release = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(paced_engine.stream(CONTEXT)) as stream:
            async for _chunk in stream:
                first.set()
                await release.wait()  # never set: stands for a slow client write

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert not other_tasks()


async def test_health_is_a_dict_in_every_state(make_engine: EngineFactory) -> None:
    engine = make_engine(False)
    before = await engine.health()
    await engine.open()
    during = await engine.health()
    await engine.close()
    after = await engine.health()
    for report in (before, during, after):
        assert isinstance(report, dict)
    assert during.get("status") == "ok"


async def test_open_and_close_are_idempotent(make_engine: EngineFactory) -> None:
    engine = make_engine(False)
    await engine.close()  # closing what was never opened is harmless
    await engine.open()
    await engine.open()
    assert "".join(await collect(engine, CONTEXT))
    await engine.close()
    await engine.close()


# --- the registry ---------------------------------------------------------------------------


def test_registry_builds_the_simulated_engine_from_settings() -> None:
    engine = create_engine(make_settings(engine="simulated", response_delay=0.25, token_delay=0))
    assert engine.name == "simulated"
    assert getattr(engine, "response_delay", None) == 0.25


def test_builtins_are_registered_like_plugins() -> None:
    assert set(BUILTIN_ENGINES) == {"simulated", "openai", "local"}
    assert all(target.count(":") == 1 for target in BUILTIN_ENGINES.values())


def test_registry_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown engine 'simulated'; choose one of: other"):
        create_engine(make_settings(engine="simulated"), registry={"other": "x:y"})


def test_registry_reports_an_engine_not_written_yet() -> None:
    registry = {"simulated": "chatbot_sse.engines.not_written_yet:from_settings"}
    with pytest.raises(ValueError, match=r"^engine 'simulated' is not available yet$"):
        create_engine(make_settings(engine="simulated"), registry=registry)


@pytest.mark.parametrize("name", ["openai", "local"])
def test_later_engines_fail_clearly_until_they_exist(name: str) -> None:
    if importlib.util.find_spec(f"chatbot_sse.engines.{name}") is not None:
        pytest.skip(f"the {name} engine exists now; its own contract params cover it")
    with pytest.raises(ValueError, match=rf"^engine '{name}' is not available yet$"):
        create_engine(make_settings(engine=name))


def test_registry_names_a_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_missing_dep.py").write_text(
        "import surely_not_installed_dependency  # noqa: F401\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "needs_missing_dep", raising=False)
    registry = {"simulated": "needs_missing_dep:from_settings"}
    with pytest.raises(ValueError, match="needs the package 'surely_not_installed_dependency'"):
        create_engine(make_settings(engine="simulated"), registry=registry)
