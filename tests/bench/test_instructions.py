"""`bench.instructions`: reading callgrind's count and turning two runs into a per-reply figure."""

from __future__ import annotations

import pytest
from bench.instructions import collected, per_reply

CALLGRIND_EXIT = """==4242== Events    : Ir
==4242== Collected : 4,336,590,221
==4242==
==4242== I   refs:      4,336,590,221
"""


def test_the_count_is_read_from_callgrinds_exit_report() -> None:
    assert collected(CALLGRIND_EXIT) == 4_336_590_221


def test_output_without_a_count_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no instruction count"):
        collected("==1== valgrind: failed to start tool 'callgrind'\n")


def test_start_up_cancels_out_of_the_difference_of_two_runs() -> None:
    startup, each = 3_000_000_000, 1_200_000
    small = (100, startup + 100 * each)
    large = (300, startup + 300 * each)
    assert per_reply(small, large) == each
    with pytest.raises(ValueError, match="more replies"):
        per_reply(large, small)
