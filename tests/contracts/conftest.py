"""The stores every contract suite runs against, parametrised the way litestar does it.

Each backend is a parameter of `make_store`: a fixture named
`<backend>_store_factory` returning a callable that builds a new, unopened
store on that backend's shared place (the same SQLite file, the same Redis
database and key prefix), so a test can open a second store object over the
same data, as another worker or instance would. Factories take the store's
keyword options (`event_retention=`). To add a backend (Valkey), add such a
fixture and its name to `STORES`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbot_sse.stores import Store
from chatbot_sse.stores.memory import MemoryStore
from chatbot_sse.stores.redis import RedisStore
from chatbot_sse.stores.sqlite import SQLiteStore
from redissupport import delete_prefix, require_redis, unique_prefix

StoreFactory = Callable[..., Store]

STORES = ["memory", "sqlite", "redis"]


@pytest.fixture
def memory_store_factory() -> StoreFactory:
    return MemoryStore


@pytest.fixture
def sqlite_store_factory(tmp_path: Path) -> StoreFactory:
    return lambda **options: SQLiteStore(tmp_path / "contract.db", **options)


@pytest.fixture
def redis_store_factory() -> Iterator[StoreFactory]:
    url = require_redis()
    prefix = unique_prefix()

    def factory(**options: Any) -> Store:
        return RedisStore(url, prefix=prefix, **options)

    yield factory
    delete_prefix(url, prefix)


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = request.getfixturevalue(f"{request.param}_store_factory")
    return factory


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    store = make_store()
    await store.open()
    yield store
    await store.close()
