"""Python bytecode instructions per reply, by function: where a reply's interpreted work goes.

    STORE_URL=memory:// .venv/bin/python -m bench.bytecodes --replies 300 --top 40
    .venv/bin/python -m bench.bytecodes --loop asyncio
    .venv/bin/python -m bench.bytecodes --loop asyncio --pushed --pace 0.05 --concurrency 1000

`bench.inprocess` (the app driven in process, no sockets) with `sys.monitoring` (Python 3.12+)
counting every bytecode instruction executed and every call, per code object, over the
replies after its warm-up. The counts do not move with the machine's noise, and they name
functions, which `bench.instructions` (valgrind) cannot: what the interpreter does, not what
it costs. A call or a C function (orjson, a regex, a lock) counts as one instruction here
and far more in valgrind's count; so find the places here, then measure a change there.
Counts are exact at delays 0 with the memory store (the default here); timing decides how
much a paced reply's frames coalesce, and with SQLite how its writes batch. `--pushed` and
`--pace` as in `bench.inprocess` (paced, the counting slows the loop ~10x: timers that fire
by the clock, such as the streams' sweep, run more often per reply than on a real server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from types import CodeType
from typing import Any

TOOL_ID = 3  # sys.monitoring's tool ids 0-5; 3 is not one that debuggers or profilers take


class Counts:
    """Bytecodes executed and calls made, per code object, while `on`."""

    def __init__(self) -> None:
        self.bytecodes: Counter[CodeType] = Counter()
        self.calls: Counter[CodeType] = Counter()

    def _instruction(self, code: CodeType, offset: int) -> None:
        self.bytecodes[code] += 1

    def _start(self, code: CodeType, offset: int) -> None:
        self.calls[code] += 1

    def on(self) -> None:
        monitoring = sys.monitoring
        monitoring.use_tool_id(TOOL_ID, "bench.bytecodes")
        monitoring.register_callback(TOOL_ID, monitoring.events.INSTRUCTION, self._instruction)
        monitoring.register_callback(TOOL_ID, monitoring.events.PY_START, self._start)
        monitoring.set_events(TOOL_ID, monitoring.events.INSTRUCTION | monitoring.events.PY_START)

    def off(self) -> None:
        sys.monitoring.set_events(TOOL_ID, 0)
        sys.monitoring.free_tool_id(TOOL_ID)


def where(code: CodeType) -> str:
    """`package/module.py:line qualified.name`, without the environment's prefixes."""
    path = code.co_filename
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[-1]
            break
    return f"{path}:{code.co_firstlineno} {code.co_qualname}"


def measure(replies: int, concurrency: int, loop: str, pushed: bool = False) -> tuple[Counts, int]:
    """Count over `replies` replies, after `bench.inprocess`'s warm-up: the counting starts
    and stops where it takes its CPU time (its two `time.process_time` calls)."""
    from bench import inprocess

    counts = Counts()
    taken = 0
    real = time.process_time

    def process_time() -> float:
        nonlocal taken
        taken += 1
        if taken == 1:
            counts.on()
        elif taken == 2:
            counts.off()
        return real()

    inprocess.time.process_time = process_time  # type: ignore[attr-defined]
    try:
        run: Any = asyncio.run
        if loop == "uvloop":
            import uvloop

            run = uvloop.run
        run(inprocess._run(replies, concurrency, False, "chatbot_sse", pushed))
    finally:
        inprocess.time.process_time = real  # type: ignore[attr-defined]
    return counts, replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--top", type=int, default=40, help="functions listed, most first")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument(
        "--pushed", action="store_true", help="body chunks written as our protocols write them"
    )
    args = parser.parse_args(argv)
    if sys.version_info < (3, 12):
        parser.exit(2, "needs Python 3.12+ (sys.monitoring)\n")
    os.environ.setdefault("STORE_URL", "memory://")
    for name in ("TOKEN_DELAY", "BENCH_PACE"):  # delays 0 by default: the counts are exact
        os.environ[name] = str(args.pace)
    for name, value in (("RESPONSE_DELAY", "0"), ("LOG_LEVEL", "WARNING")):
        os.environ.setdefault(name, value)
    counts, replies = measure(args.replies, args.concurrency, args.loop, args.pushed)
    total = sum(counts.bytecodes.values())
    print(f"bytecodes per reply: {total / replies:,.0f}")
    print("per reply: bytecodes, calls, function")
    for code, executed in counts.bytecodes.most_common(args.top):
        print(f"{executed / replies:9.1f} {counts.calls[code] / replies:7.2f}  {where(code)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
