"""The openai engine: replies streamed from any OpenAI-compatible chat-completions server.

vLLM, Ollama, llama.cpp's server, TGI, LM Studio and OpenAI itself speak the
same protocol: `POST {OPENAI_BASE_URL}/chat/completions` with `stream: true`
answers with SSE chunks, `data: [DONE]` last. One `httpx.AsyncClient` (one
connection pool) per worker is created in `open()` and closed in `close()`.

An upstream can fail in every way a network service can; none of them may hang
or crash a reply. Each ends the stream with an `UpstreamError` subclass:

- no connection within `OPENAI_CONNECT_TIMEOUT`, no first token within
  `OPENAI_FIRST_TOKEN_TIMEOUT`, no next chunk within `OPENAI_IDLE_TIMEOUT`:
  `upstream_timeout`;
- unreachable, or an error status: `upstream_error` (retryable for 408, 429,
  5xx and unreachable; not for other 4xx, which a retry would only repeat);
- a body that is not a chat-completions stream, or one that ends before a
  finish reason or `[DONE]`: `upstream_protocol_error`.

Retryable failures are retried `OPENAI_MAX_RETRIES` times with exponential
backoff (honouring `Retry-After`), but only before the first token: after it,
the client has seen part of a reply that a second attempt would not continue.
Cancelling the stream (the client left) closes the upstream response, and so
the upstream's connection, at once: the model server stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from chatbot_sse.domain import Message
from chatbot_sse.engines._openai_http import read_reply, status_error
from chatbot_sse.engines._openai_wire import chat_messages
from chatbot_sse.engines.base import StreamResult
from chatbot_sse.errors import EngineError, UpstreamError, UpstreamTimeout
from chatbot_sse.observability.logging import get_logger

if TYPE_CHECKING:
    from chatbot_sse.config import Settings
    from chatbot_sse.observability.metrics import Metrics

__all__ = ["HEALTH_TTL", "OpenAIEngine", "from_settings"]

log = get_logger(__name__)

HEALTH_TIMEOUT = 2.0  # seconds for the `/models` probe behind `/health`
HEALTH_TTL = 5.0  # seconds a probe's answer is reused: `/health` may be polled often
MAX_RETRY_AFTER = 10.0  # seconds; a longer Retry-After is not worth holding a reply for
MAX_CONNECTIONS = 1000  # to the upstream, per worker: one per streaming reply


def _ignore(outcome: str, first_token: float | None = None) -> None:
    """Where upstream outcomes go until `instrument()` is called."""


class OpenAIEngine:
    """Streams from an OpenAI-compatible upstream; one connection pool, shared by all turns."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        model: str = "",
        *,
        system_prompt: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
    ) -> None:
        if min(connect_timeout, first_token_timeout, idle_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if max_retries < 0 or retry_backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.configured_model = model
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self._client: httpx.AsyncClient | None = None
        self._resolved_model = ""
        self._model_lock = asyncio.Lock()
        self._health: tuple[float, dict[str, Any]] | None = None
        self._health_lock = asyncio.Lock()
        self._observe: Callable[[str, float | None], None] = _ignore

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def model(self) -> str:
        """The model asked for: `OPENAI_MODEL`, else the first the upstream listed ("" before)."""
        return self.configured_model or self._resolved_model

    def instrument(self, metrics: Metrics) -> None:
        """Count every upstream request (retries included) and its time to first token."""
        self._observe = metrics.upstream_request

    async def open(self) -> None:
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            # Reads are bounded by the first-token and idle deadlines in `_read` instead.
            timeout=httpx.Timeout(
                connect=self.connect_timeout,
                read=None,
                write=max(self.connect_timeout, 10.0),
                pool=self.first_token_timeout,
            ),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=100),
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> dict[str, Any]:
        """Whether the upstream answers `GET /models`, probed at most every `HEALTH_TTL` s."""
        report: dict[str, Any] = {"name": self.name, "base_url": self.base_url}
        client = self._client
        if client is None:
            return {**report, "status": "closed"}
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL:
            return cached[1]
        async with self._health_lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL:
                return cached[1]
            state = {**report, **await self._probe(client)}
            self._health = (time.monotonic(), state)
            return state

    async def _probe(self, client: httpx.AsyncClient) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                response = await client.get("models")
        except TimeoutError:
            return {"status": "unavailable", "error": "timeout"}
        except Exception as exc:  # must not raise: /health reports, it does not fail
            return {"status": "unavailable", "error": type(exc).__name__}
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if response.status_code != 200:
            return {"status": "unavailable", "error": f"status {response.status_code}"}
        return {"status": "ok", "model": self.model or None, "latency_ms": latency_ms}

    async def stream(
        self, context: Sequence[Message], result: StreamResult | None = None
    ) -> AsyncGenerator[str, None]:
        """Stream the upstream's reply to `context`, retrying before the first token."""
        client = self._client
        if client is None:
            raise EngineError("the openai engine is not open")
        messages = chat_messages(context, self.system_prompt)
        attempt = 0
        while True:
            started = time.perf_counter()
            first_token: float | None = None
            try:
                async with self._response(client, messages) as response:
                    async for piece in read_reply(
                        response, result, self.first_token_timeout, self.idle_timeout
                    ):
                        if first_token is None:
                            first_token = time.perf_counter() - started
                        yield piece
                self._observe("ok", first_token)
                return
            except (UpstreamError, UpstreamTimeout) as exc:
                self._observe(exc.code, first_token)
                if first_token is not None or not exc.retryable or attempt >= self.max_retries:
                    raise
                attempt += 1
                delay = self._backoff(attempt, exc)
                log.warning("upstream_retry", code=exc.code, attempt=attempt, delay=delay)
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int, exc: EngineError) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), MAX_RETRY_AFTER)
        jitter = 0.5 + random.random() / 2  # noqa: S311 - spreading retries, not cryptography
        return float(self.retry_backoff * 2 ** (attempt - 1) * jitter)

    def _body(self, messages: list[dict[str, str]], model: str) -> bytes:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return orjson.dumps(body)

    @contextlib.asynccontextmanager
    async def _response(
        self, client: httpx.AsyncClient, messages: list[dict[str, str]]
    ) -> AsyncIterator[httpx.Response]:
        """The upstream's response with a 2xx status, closed on leaving whatever happens."""
        deadline = asyncio.get_running_loop().time() + self.first_token_timeout
        try:
            async with asyncio.timeout_at(deadline):
                model = await self._resolve_model(client)
                request = client.build_request(
                    "POST",
                    "chat/completions",
                    content=self._body(messages, model),
                    headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                )
                response = await client.send(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeout(
                f"the upstream did not answer within {self.first_token_timeout:g}s"
            ) from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"could not connect to the upstream within {self.connect_timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach the upstream: {type(exc).__name__}") from None
        try:
            if response.status_code >= 400:
                raise await status_error(response, read_within=self.connect_timeout)
            yield response
        finally:
            await response.aclose()

    async def _resolve_model(self, client: httpx.AsyncClient) -> str:
        """`OPENAI_MODEL`, or else the first model the upstream lists (llama.cpp serves one)."""
        if self.model:
            return self.model
        async with self._model_lock:
            if not self.model:
                response = await client.get("models")
                try:
                    models = response.json()["data"]
                    self._resolved_model = str(models[0]["id"])
                except (ValueError, KeyError, IndexError, TypeError):
                    raise UpstreamError(
                        f"OPENAI_MODEL is not set and the upstream's /models (status "
                        f"{response.status_code}) names no model",
                        status=response.status_code,
                    ) from None
        return self.model


def from_settings(settings: Settings) -> OpenAIEngine:
    """The registry's factory: every `OPENAI_*` setting, plus `SYSTEM_PROMPT`."""
    return OpenAIEngine(
        settings.openai_base_url,
        settings.openai_api_key,
        settings.openai_model,
        system_prompt=settings.system_prompt,
        temperature=settings.openai_temperature,
        max_tokens=settings.openai_max_tokens,
        connect_timeout=settings.openai_connect_timeout,
        first_token_timeout=settings.openai_first_token_timeout,
        idle_timeout=settings.openai_idle_timeout,
        max_retries=settings.openai_max_retries,
        retry_backoff=settings.openai_retry_backoff,
    )
