"""Fixtures for the store tests of this directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatbot_sse.stores.sqlite import SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite store on `tmp_path / "chat.db"` (files with other needs define their own)."""
    store = SQLiteStore(tmp_path / "chat.db")
    await store.open()
    yield store
    await store.close()
