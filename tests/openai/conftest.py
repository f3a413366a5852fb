"""Fixtures for the OpenAI-protocol tests: a fault-injecting upstream and live servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_upstream import FaultUpstream
from support import live_server

from livesupport import ServerProcess


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the simulated engine, shared by a module's tests."""
    server = live_server(tmp_path_factory.mktemp("simulated"), "simulated")
    yield server
    server.stop()
