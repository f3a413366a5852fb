"""Fixtures: the fault-injecting fake chat server on a real port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from loadtest.fake_server import FakeChatServer, FakeConfig, serve


@pytest.fixture
def fake() -> Iterator[Callable[..., tuple[FakeChatServer, str]]]:
    """Start fake servers (`fake(chunks=8, fail_every=5)`); all stop after the test."""
    with ExitStack() as stack:

        def start(**config: object) -> tuple[FakeChatServer, str]:
            app = FakeChatServer(FakeConfig(**config))  # type: ignore[arg-type]
            return app, stack.enter_context(serve(app))

        yield start
