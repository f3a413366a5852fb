"""`bench.bytecodes`: the interpreter's work per reply, by function, counted in a subprocess."""

from __future__ import annotations

import re
import sys

import pytest

from benchsupport import run_bench

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")


def test_a_reply_is_counted_function_by_function() -> None:
    output = run_bench(
        "bytecodes", "--replies", "40", "--top", "400", env={"STORE_URL": "memory://"}
    )
    total = re.search(r"bytecodes per reply: ([\d,]+)", output)
    assert total is not None, output
    assert int(total.group(1).replace(",", "")) > 1000
    rows = {
        line.split(None, 2)[2]: (float(line.split()[0]), float(line.split()[1]))
        for line in output.splitlines()[2:]
    }
    publish = [calls for name, (_, calls) in rows.items() if name.endswith(" LiveReply.publish")]
    many = [calls for name, (_, calls) in rows.items() if name.endswith(" LiveReply.publish_many")]
    last = [calls for name, (_, calls) in rows.items() if name.endswith(" LiveReply.publish_last")]
    # Every reply of the bench is `connected`, 20 `message` and `completed`: the first alone,
    # the 20 chunks, ready together at delays 0, in one batch, and the last with the end.
    assert publish == [1.0]
    assert many == [1.0]
    assert last == [1.0]
    names = " ".join(rows)
    assert "chatbot_sse/turns.py" in names
    assert "TurnService.run" in names
