"""Ids: the properties resume and history ordering rely on."""

from __future__ import annotations

import time

from chatbot_sse.domain import (
    CONVERSATION_ID_RANDOM_BITS,
    is_conversation_id,
    new_conversation_id,
    new_message_id,
)


def test_message_ids_strictly_increase_within_a_process() -> None:
    ids = [new_message_id() for _ in range(100_000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 28 and int(i, 16) >= 0 for i in ids)


def test_conversation_ids_are_unguessable_hex() -> None:
    ids = {new_conversation_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_conversation_id(i) for i in ids)
    assert not is_conversation_id("../../etc/passwd")


def test_conversation_ids_start_with_the_time_and_end_with_84_random_bits() -> None:
    """The time in front keeps new conversations together in the store's indexes."""
    before = time.time_ns() // 1_000_000
    ids = [new_conversation_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert all(before <= int(i[:11], 16) <= after for i in ids)
    assert [i[:11] for i in ids] == sorted(i[:11] for i in ids)
    randoms = [int(i[11:], 16) for i in ids]
    assert CONVERSATION_ID_RANDOM_BITS == 84 == 4 * len(ids[0][11:])
    assert len(set(randoms)) == len(randoms)
    # every one of the 84 bits varies: none is stuck at 0 or 1
    assert all(0 < sum(r >> bit & 1 for r in randoms) < len(randoms) for bit in range(84))
