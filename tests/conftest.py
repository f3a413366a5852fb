"""Fixtures: live servers on real ports with real SQLite files (see `livesupport`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livesupport import ServerProcess, Stream, post_chat


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra environment; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(kind: str = "uvicorn", **env: str) -> ServerProcess:
        base = {
            "STORE_URL": f"sqlite:///{tmp_path}/chat-{len(started)}.db",
            "RESPONSE_DELAY": "0",
            "TOKEN_DELAY": "0",
            "LOG_LEVEL": "INFO",
        }
        server = ServerProcess({**base, **env}, kind=kind)
        server.log_path = tmp_path / f"server-{len(started)}.log"
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared uvicorn server with the default SQLite store and a fast engine."""
    tmp = tmp_path_factory.mktemp("server")
    proc = ServerProcess(
        {
            "STORE_URL": f"sqlite:///{tmp}/chat.db",
            "RESPONSE_DELAY": "0",
            "TOKEN_DELAY": "0.001",
            "KEEPALIVE_SECONDS": "15",
        }
    )
    proc.log_path = tmp / "server.log"
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def chat() -> Callable[..., Stream]:
    return post_chat
