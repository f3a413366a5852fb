"""Ids: the properties resume and history ordering rely on."""

from __future__ import annotations

from chatbot_sse.domain import is_conversation_id, new_conversation_id, new_message_id


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
