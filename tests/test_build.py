"""Which build of the package the suite is testing: plain Python, or the compiled one.

`make test` tests the editable install, whose modules must be the sources as they are:
a compiled module left in `src/` would shadow every later edit. `make test-native` puts
the compiled build (`make native`) first on PYTHONPATH and sets
CHATBOT_SSE_EXPECT_COMPILED=1: then the reply's path must really be compiled, or those
tests would pass against plain Python and prove nothing about the build.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The modules every reply goes through, and one of each kind the build leaves alone.
REPLY_PATH = [
    "chatbot_sse.sse",
    "chatbot_sse.replies",
    "chatbot_sse.turns",
    "chatbot_sse.api.streaming",
    "chatbot_sse.stores.sqlite",
    "chatbot_sse.observability.metrics",
]
ALWAYS_INTERPRETED = [
    "chatbot_sse.api.chat",  # FastAPI reads its endpoint's signature
    "chatbot_sse.engines.simulated",  # an async generator
    "chatbot_sse.config",
    "chatbot_sse.errors",  # compiled, an exception's subclasses lose their class defaults
    "chatbot_sse.api.direct",  # compiled, it loses the response's handling of a cancellation
]

EXPECT_COMPILED = os.environ.get("CHATBOT_SSE_EXPECT_COMPILED") == "1"


def compiled_sources() -> list[Path]:
    """The files pyproject's mypyc hook compiles: its `include`, less its `exclude` (a bare
    name there excludes that name anywhere, as in .gitignore)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    hook = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]
    chosen: set[Path] = set()
    for pattern in hook["include"]:
        for path in ROOT.glob(pattern):
            chosen.update(path.rglob("*.py") if path.is_dir() else [path])
    excluded = hook["exclude"]
    return sorted(p for p in chosen if not any(p.name == e or p == ROOT / e for e in excluded))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)


def test_the_build_covers_the_reply_path() -> None:
    compiled = {_module(path) for path in compiled_sources()}
    assert set(REPLY_PATH) <= compiled
    assert not set(ALWAYS_INTERPRETED) & compiled


def _mypyc_pitfalls(source: str) -> list[str]:
    """Two things compiled code does differently from Python, found when this suite ran against
    the build: one `except ... as name` per function keeps the first clause's type (a later
    clause's exception fails a type check), and an `await` inside a handler: the coroutine,
    suspended there, leaves the handled exception current for every other task that runs
    meanwhile, and their compiled code raised it again (a /v1 client that left came out as an
    unhandled CancelledError in another task); a bare `raise` after it re-raised an exception
    already released. Handlers note what happened; the awaits follow them."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        caught: dict[str, str] = {}
        for node in ast.walk(fn):
            if not isinstance(node, ast.ExceptHandler):
                continue
            kind = ast.unparse(node.type) if node.type else "BaseException"
            if node.name and caught.setdefault(node.name, kind) != kind:
                found.append(f"{fn.name}: `{node.name}` catches {caught[node.name]} and {kind}")
            for n in ast.walk(node):
                if isinstance(n, ast.Await | ast.AsyncWith | ast.AsyncFor):
                    found.append(f"{fn.name}: an await inside a handler (line {n.lineno})")
                    break
    return found


def test_compiled_modules_avoid_what_mypyc_gets_wrong() -> None:
    found = {
        str(path.relative_to(ROOT)): problems
        for path in compiled_sources()
        if (problems := _mypyc_pitfalls(path.read_text()))
    }
    assert not found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n try: pass\n except KeyError as e: pass\n except OSError as e: pass", 1),
        ("def f():\n try: pass\n except KeyError as e: pass\n except KeyError as e: pass", 0),
        ("async def f(g):\n try: pass\n except OSError:\n  await g()\n  raise", 1),
        ("async def f(g):\n try: pass\n except OSError as e:\n  await g()\n  raise e", 1),
        ("async def f(g):\n try: pass\n except OSError:\n  x = 1\n await g()", 0),
        ("def f(g):\n try: pass\n except OSError:\n  g()\n  raise", 0),
    ],
)
def test_the_pitfall_check_finds_them(source: str, expected: int) -> None:
    assert len(_mypyc_pitfalls(source)) == expected


def _compiled(name: str) -> bool:
    module = importlib.import_module(name)
    return str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES))


@pytest.mark.parametrize("name", REPLY_PATH)
def test_the_reply_path_is_the_expected_build(name: str) -> None:
    assert _compiled(name) is EXPECT_COMPILED, (
        f"{name} is {'compiled' if _compiled(name) else 'plain Python'}, "
        f"expected {'compiled' if EXPECT_COMPILED else 'plain Python'}"
    )


@pytest.mark.parametrize("name", ALWAYS_INTERPRETED)
def test_modules_left_out_of_the_build_stay_python(name: str) -> None:
    assert not _compiled(name)


def test_a_server_process_runs_the_same_build() -> None:
    """The live servers the suite starts inherit its PYTHONPATH, so they run this build too."""
    probe = "import chatbot_sse.replies as m, sys; sys.stdout.write(str(m.__file__))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.endswith(tuple(EXTENSION_SUFFIXES)) is EXPECT_COMPILED, out
