"""The chat-completions wire format, as the openai engine speaks it to an upstream.

Pure functions, no I/O: the request body built from a turn's context, the
upstream's SSE `data:` lines decoded, each streamed chunk read into text,
finish reason and usage. Everything an upstream can get wrong here raises an
`UpstreamError` subclass with a message that says what it got.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from chatbot_sse.domain import Message
from chatbot_sse.engines.base import StreamResult
from chatbot_sse.errors import UpstreamError, UpstreamProtocolError

__all__ = [
    "DONE",
    "Delta",
    "chat_messages",
    "error_message",
    "parse_chunk",
    "parse_completion",
    "sse_data",
]

DONE = "[DONE]"
_SHOWN = 200  # characters of an upstream's bad payload quoted in an error message


def chat_messages(context: Sequence[Message], system_prompt: str = "") -> list[dict[str, str]]:
    """The context as chat messages: empty ones dropped, consecutive same-role ones merged.

    A reply that failed before its first chunk is stored empty, which would
    leave two user messages in a row; many chat templates (Llama, Mistral)
    refuse anything but alternating roles, so they are joined instead.
    """
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for message in context:
        if not message.content:
            continue
        role = message.role.value
        if messages and messages[-1]["role"] == role and role != "system":
            messages[-1]["content"] += "\n\n" + message.content
        else:
            messages.append({"role": role, "content": message.content})
    return messages


async def sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """The `data` of each SSE event in `lines` (multi-line data joined); comments skipped.

    An event still pending when the stream ends is delivered too: some servers
    end with `data: [DONE]` and close without the blank line.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


@dataclass(slots=True)
class Delta:
    """One streamed chunk, read: its text (maybe empty) and, on the last ones, how it ended."""

    content: str
    finish_reason: str | None


def _load(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        shown = data[:_SHOWN] if isinstance(data, str) else data[:_SHOWN].decode(errors="replace")
        raise UpstreamProtocolError(
            f"the upstream sent {what} that is not JSON: {shown!r}", retryable=False
        ) from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(
            f"the upstream sent {what} that is not an object", retryable=False
        )
    return parsed


def _raise_embedded_error(payload: dict[str, Any]) -> None:
    """vLLM and others report a failure mid-stream as `data: {"error": {...}}`."""
    error = payload.get("error")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) else None
        retryable = status is None or status >= 500 or status == 429
        raise UpstreamError(
            f"the upstream failed mid-reply: {error_message(payload)}",
            status=status,
            retryable=retryable,
        )


def _fill_usage(payload: dict[str, Any], result: StreamResult | None) -> None:
    usage = payload.get("usage")
    if result is None or not isinstance(usage, dict):
        return
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int):
        result.prompt_tokens = prompt
    if isinstance(completion, int):
        result.completion_tokens = completion


def _choice(payload: dict[str, Any], what: str) -> dict[str, Any] | None:
    choices = payload.get("choices")
    if choices is None or choices == []:
        return None  # the usage-only chunk, or a keep-alive some servers send
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise UpstreamProtocolError(
            f"the upstream sent {what} with malformed choices", retryable=False
        )
    choice: dict[str, Any] = choices[0]
    return choice


def _finish(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) and reason else None


def parse_chunk(data: str, result: StreamResult | None) -> Delta:
    """Read one `chat.completion.chunk`; usage, when present, goes into `result`."""
    payload = _load(data, "a chunk")
    _raise_embedded_error(payload)
    _fill_usage(payload, result)
    choice = _choice(payload, "a chunk")
    if choice is None:
        return Delta("", None)
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise UpstreamProtocolError(
            "the upstream sent a chunk whose content is not text", retryable=False
        )
    return Delta(content or "", _finish(choice))


def parse_completion(body: bytes, result: StreamResult | None) -> Delta:
    """Read a whole `chat.completion`: for an upstream that ignores `stream: true`."""
    payload = _load(body, "a completion")
    _raise_embedded_error(payload)
    _fill_usage(payload, result)
    choice = _choice(payload, "a completion")
    message = choice.get("message") if choice else None
    content = message.get("content") if isinstance(message, dict) else None
    if choice is None or not isinstance(content, str):
        raise UpstreamProtocolError("the upstream sent a completion without text", retryable=False)
    return Delta(content, _finish(choice) or "stop")


def error_message(payload: Any) -> str:
    """The human part of an OpenAI-style error body, whatever its exact shape."""
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(error.get(key), str):
                    return str(error[key])[:_SHOWN]
        elif isinstance(error, str):
            return error[:_SHOWN]
    return str(payload)[:_SHOWN]
