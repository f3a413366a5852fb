"""A server that cannot start says why in one line: a wrong setting, a store or engine it cannot
open. Run as users run it: `chatbot-sse serve` and gunicorn, in subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PORT": "0", "HOST": "127.0.0.1", **env}
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


SERVE = [str(BIN / "chatbot-sse"), "serve"]
GUNICORN = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "chatbot_sse.main:app"]


@pytest.mark.parametrize("command", [SERVE, GUNICORN], ids=["serve", "gunicorn"])
def test_a_wrong_setting_is_named_in_one_line_per_problem(command: list[str]) -> None:
    done = run(command, TOKEN_DELAY="-1", ENGINE="bogus")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.splitlines() == [
        "chatbot-sse: invalid configuration:",
        "  TOKEN_DELAY='-1': Input should be greater than or equal to 0",
        "  ENGINE='bogus': Input should be 'simulated', 'openai' or 'local'",
    ]


def test_a_value_that_may_hold_a_secret_is_named_not_printed() -> None:
    done = run(SERVE, STORE_URL="postgres://user:hunter2@db/chat", API_KEYS="")
    assert done.returncode == 2
    assert "hunter2" not in done.stderr
    assert "  STORE_URL: unsupported STORE_URL scheme 'postgres'" in done.stderr.splitlines()


def test_a_store_that_cannot_open_is_the_first_error_logged(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    done = run(SERVE, STORE_URL=f"sqlite:///{blocked}/chat.db", LOG_LEVEL="INFO")
    assert done.returncode == 3  # uvicorn's "startup failed"
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    errors = [record for record in records if record["level"] == "error"]
    assert errors[0]["event"] == "cannot_start"
    assert errors[0]["reason"].startswith(f"cannot open SQLite store {blocked}/chat.db")
    traceback = next(r["event"] for r in errors if r["event"].startswith("Traceback"))
    # Where the lifespan gave up, not the whole chain of exceptions that led there.
    assert "During handling" not in traceback
    last = traceback.splitlines()[-1]
    assert last == f"chatbot_sse.lifespan.StartupFailed: {errors[0]['reason']}"


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed"
)
def test_a_missing_optional_engine_says_how_to_install_it() -> None:
    done = run(SERVE, ENGINE="local")
    assert done.returncode == 3
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    first = next(record for record in records if record["level"] == "error")
    assert first["event"] == "cannot_start"
    assert "make install-local, or pip install 'chatbot-sse[local]'" in first["reason"]


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:6379/12x",
        "rediss://user:hunter2@127.0.0.1/abc",
        "redis://:hunter2@127.0.0.1:notaport/12",
        "redis://:hunter2@127.0.0.1:6379/1?prefix=a&prefix=b",
    ],
)
def test_a_malformed_redis_url_is_refused_without_its_password(url: str) -> None:
    done = run(SERVE, STORE_URL=url)
    assert done.returncode == 3
    assert "hunter2" not in done.stdout + done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    first = next(record for record in records if record["level"] == "error")
    assert first["event"] == "cannot_start"
    assert first["reason"].startswith("invalid Redis URL '")
    assert ":***@" in first["reason"]
