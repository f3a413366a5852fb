"""The benchmark's report: the round-by-round ratios beside the targets (no servers run)."""

from __future__ import annotations

from typing import Any

from bench import report


def rounds_of(values: list[float | None]) -> list[dict[str, Any]]:
    return [{"error": "broken"} if v is None else {"wrk": {"replies_per_s": v}} for v in values]


def test_ratios_are_taken_within_each_round_then_their_median() -> None:
    """The machine slowed down during the run: within a round the ratio holds steady."""
    rounds = {
        "bare_asgi": rounds_of([3000, 2000, 1000]),
        "sse_starlette_app": rounds_of([600, 400, None]),
        "chatbot_sse": rounds_of([1800, 1100, 650]),
    }
    got = report.round_ratios(rounds)
    assert got["floor"]["rounds"] == [0.6, 0.55, 0.65]
    assert got["floor"]["median"] == 0.6
    assert got["sse_starlette"]["rounds"] == [3.0, 2.75, None]
    assert got["sse_starlette"]["median"] == 2.75  # the lower middle of two
    line = report.round_ratios_line({"round_ratios": got})
    assert line is not None
    assert "over the floor 0.60, 0.55, 0.65 (median 0.60x)" in line
    assert "over sse-starlette 3.00, 2.75 (median 2.75x)" in line


def test_one_round_or_missing_servers_say_nothing() -> None:
    one = report.round_ratios({"bare_asgi": rounds_of([10]), "chatbot_sse": rounds_of([5])})
    assert one["floor"] == {"rounds": [0.5], "median": 0.5}
    assert report.round_ratios_line({"round_ratios": one}) is None
    assert report.round_ratios({})["floor"] == {"rounds": [], "median": None}
    assert report.round_ratios_line({}) is None
