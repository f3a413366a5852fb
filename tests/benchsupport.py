"""Running a `bench` module as its users do: `python -m bench.<name>` from the checkout's root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> str:
    """`python -m bench.<module> args...` to its end; its output. Fails the test, with the
    tail of both streams, if it exits non-zero. `env`: variables set on top of this one's."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
