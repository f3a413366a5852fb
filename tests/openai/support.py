"""Helpers for the OpenAI-protocol tests: starting servers, reading metrics and history."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from livesupport import ServerProcess


def live_server(tmp: Path, name: str, **env: str) -> ServerProcess:
    """A uvicorn server with its own SQLite file and log in `tmp`, no pacing."""
    base = {"STORE_URL": f"sqlite:///{tmp}/{name}.db", "RESPONSE_DELAY": "0", "TOKEN_DELAY": "0"}
    server = ServerProcess({**base, **env})
    server.log_path = tmp / f"{name}.log"
    return server.start()


def metric(server: ServerProcess, sample: str) -> float:
    """The value of one exposition line (`name{labels}`), 0 when it is absent."""
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def history(server: ServerProcess, conversation_id: str) -> list[dict[str, object]]:
    url = f"{server.url}/conversations/{conversation_id}/history"
    messages: list[dict[str, object]] = httpx.get(url).json()["messages"]
    return messages


def free_port_url() -> str:
    """A base URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
