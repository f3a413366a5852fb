"""The Guards contract (rate windows, stream slots, idempotency records) on every store.

These are what make limits and retries hold across gunicorn workers and
instances, so each is also checked through a second store object over the same
data, as another process would see it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import pytest

from chatbot_sse.stores import Store
from chatbot_sse.stores.base import IdempotencyRecord

StoreFactory = Callable[..., Store]


def client() -> str:
    return secrets.token_hex(8)


async def test_hit_allows_up_to_the_limit_then_refuses(store: Store) -> None:
    key = client()
    results = [await store.hit(key, 60, 3) for _ in range(5)]
    assert [allowed for allowed, _ in results] == [True, True, True, False, False]
    for _, retry_after in results:
        assert 0 < retry_after <= 60


async def test_hit_windows_are_per_key(store: Store) -> None:
    a, b = client(), client()
    assert (await store.hit(a, 60, 1))[0]
    assert not (await store.hit(a, 60, 1))[0]
    assert (await store.hit(b, 60, 1))[0]


async def test_hit_window_ends_and_starts_afresh(store: Store) -> None:
    key = client()
    assert (await store.hit(key, 0.3, 1))[0]
    allowed, retry_after = await store.hit(key, 0.3, 1)
    assert not allowed
    assert retry_after <= 0.3
    await asyncio.sleep(retry_after + 0.05)
    assert (await store.hit(key, 0.3, 1))[0]


async def test_concurrent_hits_count_exactly(store: Store) -> None:
    key = client()
    results = await asyncio.gather(*(store.hit(key, 60, 10) for _ in range(25)))
    assert sum(allowed for allowed, _ in results) == 10


async def test_hits_are_shared_with_other_store_objects(
    make_store: StoreFactory, store: Store
) -> None:
    if store.backend == "memory":
        pytest.skip("a memory store is one process's")
    other = make_store()
    await other.open()
    try:
        key = client()
        assert (await store.hit(key, 60, 2))[0]
        assert (await other.hit(key, 60, 2))[0]
        assert not (await store.hit(key, 60, 2))[0]
        assert not (await other.hit(key, 60, 2))[0]
    finally:
        await other.close()


async def test_slots_up_to_the_limit(store: Store) -> None:
    key = client()
    assert await store.acquire_slot(key, "h1", 2, 60)
    assert await store.acquire_slot(key, "h2", 2, 60)
    assert not await store.acquire_slot(key, "h3", 2, 60)
    assert await store.acquire_slot(key, "h1", 2, 60), "a holder renews its own slot"
    await store.release_slot(key, "h1")
    assert await store.acquire_slot(key, "h3", 2, 60)
    assert not await store.acquire_slot(key, "h4", 2, 60)
    await store.release_slot(key, "nobody")  # no-op
    assert await store.acquire_slot(client(), "h4", 2, 60), "slots are per key"


async def test_a_slot_whose_lease_ran_out_frees_itself(store: Store) -> None:
    key = client()
    assert await store.acquire_slot(key, "dead", 1, 0.2)
    assert not await store.acquire_slot(key, "live", 1, 60)
    await asyncio.sleep(0.3)
    assert await store.acquire_slot(key, "live", 1, 60)


async def test_concurrent_acquires_never_overbook(store: Store) -> None:
    key = client()
    taken = await asyncio.gather(*(store.acquire_slot(key, f"h{i}", 3, 60) for i in range(12)))
    assert sum(taken) == 3


async def test_slots_are_shared_with_other_store_objects(
    make_store: StoreFactory, store: Store
) -> None:
    if store.backend == "memory":
        pytest.skip("a memory store is one process's")
    other = make_store()
    await other.open()
    try:
        key = client()
        assert await store.acquire_slot(key, "a", 1, 60)
        assert not await other.acquire_slot(key, "b", 1, 60)
        await store.release_slot(key, "a")
        assert await other.acquire_slot(key, "b", 1, 60)
    finally:
        await other.close()


async def test_remember_idempotency_first_call_wins(store: Store) -> None:
    key = client()
    assert await store.remember_idempotency(key, "fp1", "cid:rid", 60) is None
    kept = IdempotencyRecord("fp1", "cid:rid")
    assert await store.remember_idempotency(key, "fp1", "other:ref", 60) == kept
    assert await store.remember_idempotency(key, "fp2", "x:y", 60) == kept
    assert await store.remember_idempotency(client(), "fp2", "x:y", 60) is None


async def test_idempotency_records_expire_and_can_be_forgotten(store: Store) -> None:
    key = client()
    assert await store.remember_idempotency(key, "fp", "a:b", 0.2) is None
    await asyncio.sleep(0.3)
    assert await store.remember_idempotency(key, "fp", "c:d", 60) is None
    assert await store.remember_idempotency(key, "fp", "e:f", 60) == IdempotencyRecord("fp", "c:d")
    await store.forget_idempotency(key)
    await store.forget_idempotency(key)  # idempotent itself
    assert await store.remember_idempotency(key, "fp", "g:h", 60) is None


async def test_concurrent_remembers_let_exactly_one_win(store: Store) -> None:
    key = client()
    results = await asyncio.gather(
        *(store.remember_idempotency(key, "fp", f"c:{i}", 60) for i in range(8))
    )
    assert results.count(None) == 1
    winner = next(f"c:{i}" for i, r in enumerate(results) if r is None)
    assert all(r == IdempotencyRecord("fp", winner) for r in results if r is not None)


async def test_remembered_across_store_objects(make_store: StoreFactory, store: Store) -> None:
    if store.backend == "memory":
        pytest.skip("a memory store is one process's")
    other = make_store()
    await other.open()
    try:
        key = client()
        assert await store.remember_idempotency(key, "fp", "a:b", 60) is None
        assert await other.remember_idempotency(key, "fp", "c:d", 60) == IdempotencyRecord(
            "fp", "a:b"
        )
    finally:
        await other.close()


async def test_guards_refuse_once_closed(make_store: StoreFactory) -> None:
    from chatbot_sse.errors import StoreUnavailable

    store = make_store()
    await store.open()
    await store.close()
    for call in (
        store.hit("k", 60, 1),
        store.acquire_slot("k", "h", 1, 60),
        store.release_slot("k", "h"),
        store.remember_idempotency("k", "fp", "a:b", 60),
        store.forget_idempotency("k"),
    ):
        with pytest.raises(StoreUnavailable, match="closed"):
            await call
