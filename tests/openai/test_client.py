"""The official `openai` package, unchanged, against this server's `/v1` (simulated engine)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from support import history

import openai
from chatbot_sse.domain import Message, Role
from chatbot_sse.engines._simulated_rules import compose_reply
from livesupport import ServerProcess, parse_sse


def expected(*texts: str) -> str:
    """What the simulated engine answers to this alternating user/assistant conversation."""
    roles = [Role.USER, Role.ASSISTANT]
    context = [Message(str(i), "", roles[i % 2], t, 0.0) for i, t in enumerate(texts)]
    return compose_reply(context)


@pytest.fixture
def client(simulated: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=simulated.url + "/v1", api_key="-", max_retries=0) as client:
        yield client


@pytest.fixture
async def aclient(simulated: ServerProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=simulated.url + "/v1", api_key="-", max_retries=0
    ) as client:
        yield client


def test_models_list_names_the_engine(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["simulated"]
    assert client.models.retrieve("simulated").owned_by == "chatbot-sse"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nothing")


def test_completion_not_streamed(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "Hello, my name is Ada."}]
    )
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.model == "simulated"
    assert choice.message.role == "assistant"
    assert choice.message.content == expected("Hello, my name is Ada.")
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_completion_streamed_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected("Tell me a story")
    assert len(chunks) > 20  # word by word, not one lump
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert set(finish[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_streamed_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_stateless_multi_turn_uses_the_messages_sent(client: openai.OpenAI) -> None:
    turns = ["Hello, my name is Ada.", expected("Hello, my name is Ada."), "What is my name?"]
    completion = client.chat.completions.create(
        model="x",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": turns[0]},
            {"role": "assistant", "content": turns[1]},
            {"role": "user", "content": [{"type": "text", "text": turns[2]}]},
        ],
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert "Ada" in content


async def test_async_client_streamed_and_not(aclient: openai.AsyncOpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is 12 * 7?"}
    ]
    whole = await aclient.chat.completions.create(model="x", messages=messages)
    stream = await aclient.chat.completions.create(model="x", messages=messages, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(parts) == whole.choices[0].message.content == expected("What is 12 * 7?")
    assert "84" in "".join(parts)
    assert [model.id async for model in aclient.models.list()] == ["simulated"]


def test_conversation_extension_stores_and_continues(
    client: openai.OpenAI, simulated: ServerProcess
) -> None:
    first = client.chat.completions.with_raw_response.create(
        model="x",
        messages=[{"role": "user", "content": "Hello, my name is Grace."}],
        extra_body={"conversation_id": "new"},
    )
    cid = first.headers["x-conversation-id"]
    assert first.parse().model_extra == {"conversation_id": cid}
    # Continue it: only the new message is sent; the server holds the history.
    stream = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": "What is my name?"}],
        stream=True,
        extra_body={"conversation_id": cid},
    )
    reply = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert "Grace" in reply
    messages = history(simulated, cid)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == first.parse().choices[0].message.content
    assert messages[3]["content"] == reply
    assert {m["status"] for m in messages} == {"complete"}


def test_errors_have_openais_shape(client: openai.OpenAI, simulated: ServerProcess) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="x", messages=[])
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["type"] == "invalid_request_error"
    assert bad.value.body["code"] == "invalid_input"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"conversation_id": "0" * 32},
        )
    for body in (
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}], "n": 2},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"messages": [{"role": "assistant", "content": "only me"}]},
        {"messages": [{"role": "user", "content": "hi"}], "conversation_id": "nope"},
        {"messages": [{"role": "user", "content": "hi"}], "audio": {"voice": "alloy"}},
        {"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"]},
    ):
        response = httpx.post(simulated.url + "/v1/chat/completions", json=body)
        assert response.status_code == 422, body
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = httpx.post(simulated.url + "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 422


def test_engine_failure_mid_stream_raises_api_error(client: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "/simulate error"}
    ]
    stream = client.chat.completions.create(model="x", messages=messages, stream=True)
    seen: list[str] = []

    def read_all() -> None:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="simulated engine failure") as failure:
        read_all()
    assert "".join(seen)  # the partial reply came first
    assert isinstance(failure.value.body, dict)
    assert failure.value.body["code"] == "engine_error"
    with pytest.raises(openai.InternalServerError) as whole:
        client.chat.completions.create(model="x", messages=messages)
    assert whole.value.status_code == 502


def test_a_failed_stored_turn_is_not_retried_by_the_client_on_its_own(
    simulated: ServerProcess,
) -> None:
    """OpenAI's clients retry a 5xx twice by default: each retry would store the turn again."""
    with openai.OpenAI(base_url=simulated.url + "/v1", api_key="-", max_retries=2) as client:
        first = client.chat.completions.with_raw_response.create(
            model="x",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"conversation_id": "new"},
        )
        cid = first.headers["x-conversation-id"]
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "/simulate error"}],
                extra_body={"conversation_id": cid},
            )
    assert failed.value.response.headers["x-should-retry"] == "false"
    stored = history(simulated, cid)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "failed"),
    ]


def test_a_stored_turn_resumes_and_cancels_as_a_chat_turn_does(
    start_server: Callable[..., ServerProcess],
) -> None:
    """A `/v1` turn with `conversation_id` is a reply like `POST /chat`'s: its log replays
    through `GET .../stream`, and `POST .../cancel` stops it."""
    server = start_server(TOKEN_DELAY="0.05")
    url = server.url + "/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "hello"}], "conversation_id": "new"}
    done = httpx.post(url, json=body, timeout=30)
    assert done.status_code == 200
    cid = done.headers["x-conversation-id"]
    replayed = httpx.get(f"{server.url}/conversations/{cid}/stream", timeout=10)
    assert replayed.status_code == 200
    events, _, _ = parse_sse(replayed.content)
    assert events[0].event == "connected"
    assert events[-1].event == "completed"
    assert events[-1].data["content"] == done.json()["choices"][0]["message"]["content"]

    story = {"messages": [{"role": "user", "content": "Tell me a story"}], "stream": True}
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", url, json={**story, "conversation_id": cid}, timeout=30) as stream:
        lines = stream.iter_lines()
        for line in lines:
            if not line.startswith("data: {"):
                continue
            chunks.append(json.loads(line[6:]))
            if len(chunks) == 3:
                cancel = httpx.post(f"{server.url}/conversations/{cid}/cancel", timeout=10)
                assert cancel.json()["status"] == "cancelled"
        tail = chunks[-1]
    assert tail["error"]["code"] == "cancelled", tail
    stored = history(server, cid)[-1]
    assert stored["status"] == "interrupted"
    assert stored["meta"] == {"finish_reason": "cancelled"}
    said = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert stored["content"] == said
