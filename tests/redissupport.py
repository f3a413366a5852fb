"""Redis for the tests: the shared server on 127.0.0.1:6379, and private ones to kill.

Tests share the real Redis (`TEST_REDIS_URL`, default db 0) and stay out of
each other's way with a fresh key prefix each, deleted afterwards. Where Redis
is missing, `require_redis` skips with the reason, except under CI (`CI` set),
where a missing Redis fails the run: the issue makes Redis a CI requirement.

`RedisServer` is a private `redis-server` on a free port, without persistence,
that a test may stop and start again to see a store fail and recover.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from livesupport import die_with_parent, free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def _redis_problem(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis at {url} is not reachable ({exc})"
    finally:
        client.close()
    return None


def require_redis(url: str = REDIS_URL) -> str:
    """`url` if Redis answers there; else skip (fail under CI) saying why."""
    problem = _redis_problem(url)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI must provide Redis")
        pytest.skip(f"{problem}; start redis-server to run these tests")
    return url


def unique_prefix() -> str:
    return f"test-{secrets.token_hex(6)}"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix`; how many there were."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


class RedisServer:
    """A private, persistence-free `redis-server` on `port`, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not on PATH; CI must provide Redis")
            pytest.skip("redis-server is not on PATH")
        options = f"--port {self.port} --bind 127.0.0.1 --appendonly no".split()
        self.proc = subprocess.Popen(
            [binary, *options, "--save", ""],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError(f"redis-server did not start on {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Kill it outright, as a crash would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
