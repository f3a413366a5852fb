"""Fixtures for scaling out: several instances on one Redis, a real nginx in front of them.

- `redis_store_url`: the shared test Redis with a fresh key prefix (deleted afterwards);
  skipped with the reason where Redis is missing, failed under CI.
- `instances(n, **env)`: `n` uvicorn processes on their own ports, all on that Redis.
- `nginx(servers)`: nginx from the Debian package running `deploy/nginx.conf` in front of
  them, on a free loopback port, with its logs and temp files under the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livesupport import ServerProcess
from redissupport import delete_prefix, require_redis, unique_prefix
from scalesupport import Nginx

INSTANCE_ENV = {
    "RESPONSE_DELAY": "0",
    "TOKEN_DELAY": "0.02",
    "DISCONNECT_GRACE_SECONDS": "10",
    "KEEPALIVE_SECONDS": "15",
}


@pytest.fixture
def redis_store_url() -> Iterator[str]:
    url = require_redis()
    prefix = unique_prefix()
    yield f"{url}?prefix={prefix}"
    delete_prefix(url, prefix)


@pytest.fixture
def instances(
    redis_store_url: str, start_server: Callable[..., ServerProcess]
) -> Callable[..., list[ServerProcess]]:
    """Start `n` instances sharing one Redis (the servers stop before the keys are deleted)."""

    def start(n: int = 2, **env: str) -> list[ServerProcess]:
        return [
            start_server(**{**INSTANCE_ENV, "STORE_URL": redis_store_url, **env}) for _ in range(n)
        ]

    return start


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[list[ServerProcess]], Nginx]]:
    started: list[Nginx] = []

    def start(servers: list[ServerProcess]) -> Nginx:
        workdir = tmp_path / f"nginx-{len(started)}"
        workdir.mkdir()
        proxy = Nginx(workdir, [f"127.0.0.1:{s.port}" for s in servers])
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()
