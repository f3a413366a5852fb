"""Instructions per reply, counted by valgrind: a CPU measure that the machine's noise does not move.

    STORE_URL=memory:// .venv/bin/python -m bench.instructions -- --pace 0.05 --concurrency 100
    STORE_URL=memory:// .venv/bin/python -m bench.instructions --base /tmp/base -- --loop asyncio

These machines are shared: CPU time per reply moves 20-40 % from one run to the next, so an
optimisation worth 3 % cannot be seen in it. Instructions can. This runs `bench.inprocess`
(the app driven in process, no sockets; its arguments go after `--`) twice under callgrind,
with `--small` and `--large` replies, and divides the difference by the difference in
replies: the interpreter's start, the imports and the warm-up cancel out. With `--base DIR`
(a git worktree of another commit: `git worktree add --detach /tmp/base HEAD`) the same is
measured for DIR's package too, and the ratio printed.

Deterministic where the work is: the memory store and the floor count the same instructions
run after run at delays 0 (measured: within 0.05 %); paced, 2-4 %, because under valgrind the
loop falls behind and chunks coalesce as timing has it (slower pacing moves less). With
SQLite, how writes batch depends on timing, and counts move by 10-20 %: compare with
`STORE_URL=memory://`. Instructions are not time
(cache misses and system calls are not in them) and callgrind runs ~50x slower than the
program: keep `--large` small with pacing (300 paced replies: about a minute).
Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"Collected\s*:\s*([\d,]+)")


def collected(valgrind_output: str) -> int:
    """The instruction count callgrind reports at exit ("Collected : 1,234")."""
    match = _COLLECTED.search(valgrind_output)
    if match is None:
        raise ValueError(f"no instruction count in valgrind's output:\n{valgrind_output[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_reply(small: tuple[int, int], large: tuple[int, int]) -> float:
    """Instructions per reply from two runs, each (replies, instructions)."""
    (n1, i1), (n2, i2) = small, large
    if n2 <= n1:
        raise ValueError("the large run must have more replies than the small one")
    return (i2 - i1) / (n2 - n1)


CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
"""The command prefix counting a program's instructions; only the count is kept."""


def shadowed(pythonpath: str, source: Path | None) -> str:
    """`pythonpath` with `source`'s package first, if given: it shadows the installed one."""
    return pythonpath if source is None else f"{source / 'src'}{os.pathsep}{pythonpath}"


def _count(replies: int, args: list[str], source: Path | None) -> int:
    env = dict(os.environ, PYTHONPATH=shadowed(str(ROOT), source))
    command = [
        *CALLGRIND,
        sys.executable,
        "-m",
        "bench.inprocess",
        "--replies",
        str(replies),
        *args,
    ]
    done = subprocess.run(  # noqa: S603 - valgrind and our own interpreter
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.inprocess failed under valgrind:\n{done.stderr[-2000:]}")
    return collected(done.stderr)


def measure(args: list[str], small: int, large: int, source: Path | None = None) -> float:
    """Instructions per reply of `bench.inprocess args` (the two runs side by side)."""
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_count, n, args, source) for n in (small, large)]
        counts = [run.result() for run in runs]
    return per_reply((small, counts[0]), (large, counts[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=100, help="replies of the first run")
    parser.add_argument("--large", type=int, default=300, help="replies of the second run")
    parser.add_argument("--base", type=Path, help="also measure this checkout's package")
    parser.add_argument("inprocess_args", nargs="*", help="for bench.inprocess (after --)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.exit(2, "needs valgrind: apt-get install valgrind\n")
    ours = measure(args.inprocess_args, args.small, args.large)
    print(f"this checkout: {ours:,.0f} instructions per reply")
    if args.base is not None:
        base = measure(args.inprocess_args, args.small, args.large, args.base)
        print(f"{args.base}: {base:,.0f} instructions per reply; this / base = {ours / base:.3f}")


if __name__ == "__main__":
    main()
