"""The commands as users run them: `python -m chatbot_sse.loadtest`, `chatbot-sse chat`, the
`withserver` helper; exit statuses, files written, errors shown plainly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from chatbot_sse.loadtest.withserver import main as withserver
from loadtest.fake_server import FakeChatServer

Fake = Callable[..., tuple[FakeChatServer, str]]
BIN = Path(sys.executable).parent


def loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "chatbot_sse.loadtest", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_json_records_and_plot_are_written(fake: Fake, tmp_path: Path) -> None:
    app, url = fake(chunks=5)
    out, records, plot = tmp_path / "r.json", tmp_path / "r.jsonl", tmp_path / "r.png"
    proc = loadtest(url, "-n", "20", "-c", "4", "--json", str(out), "--records", str(records),
                    "--plot", str(plot), "-H", "X-Api-Key: sekrit", "--seed", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "time to first chunk" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["config"]["requests"] == 20
    assert doc["config"]["headers"] == ["X-Api-Key"]  # the name only: values may be secrets
    summary = doc["summary"]
    for key in ("requests_completed", "requests_failed", "failures_by_kind", "streams_per_s",
                "chunks_per_s"):  # fmt: skip
        assert key in summary
    for key in ("ttft_s", "itl_s", "e2e_s"):
        assert set(summary[key]) == {"mean", "p50", "p90", "p95", "p99", "max"}
    assert summary["requests_completed"] == 20
    assert sum(row["completed"] for row in doc["timeseries"]) == 20
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == 20
    assert all(line["ok"] for line in lines)
    assert max(r["e2e_s"] for r in lines) == summary["e2e_s"]["max"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert app.counts["header x-api-key: sekrit"] == 20


def test_exit_status_follows_the_failure_budget(fake: Fake) -> None:
    _, url = fake(fail_every=4)
    base = [url, "-n", "20", "-c", "2", "-q"]
    assert loadtest(*base).returncode == 1
    assert loadtest(*base, "--max-failures", "5").returncode == 0
    assert loadtest(*base, "--failure-budget", "0.25").returncode == 0
    assert loadtest(*base, "--failure-budget", "0.2").returncode == 1


def test_bad_usage_and_unreachable_hosts_exit_2() -> None:
    assert loadtest("ftp://example.invalid", "-q").returncode == 2
    assert loadtest("http://127.0.0.1:8000", "-H", "no-colon").returncode == 2


def test_outputs_that_cannot_be_written_and_empty_message_files_exit_2_before_the_run(
    fake: Fake, tmp_path: Path
) -> None:
    app, url = fake(chunks=3)
    empty = tmp_path / "messages.txt"
    empty.write_text("\n  \n")
    for args in (
        ["--json", str(tmp_path / "missing" / "r.json")],
        ["--records", str(tmp_path)],  # a folder
        ["--plot", "/proc/r.png"],
        ["--messages-file", str(empty)],
    ):
        proc = loadtest(url, "-n", "5", "-q", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "error:" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert app.counts["requests"] == 0  # refused before a single stream


def test_chat_streams_keeps_the_conversation_and_reports_errors(fake: Fake) -> None:
    app, url = fake(chunks=4)
    proc = subprocess.run(
        [str(BIN / "chatbot-sse"), "chat", url],
        input="hello\nerror-event\nfail429\nagain\n/new\nfresh\n",
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1  # two turns failed
    assert proc.stdout.count("bot> ") == 4  # the 429 never started a reply
    assert "error: engine_error: injected" in proc.stderr
    assert "error: HTTP 429: rate_limited: slow down" in proc.stderr
    sizes = sorted(len(c.messages) for c in app.conversations.values())
    assert sizes == [2, 5]  # hello, error-event (user only), again; then fresh


def test_chat_says_a_reply_was_cut_when_the_connection_drops_mid_reply(fake: Fake) -> None:
    _, url = fake(chunks=4)
    proc = subprocess.run(
        [str(BIN / "chatbot-sse"), "chat", url],
        input="reset\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "bot> " in proc.stdout
    assert proc.stdout.endswith("\n")  # the partial reply's line is ended
    assert "error: the connection was lost mid-reply" in proc.stderr
    assert "cannot reach" not in proc.stderr


def test_chat_says_plainly_when_the_server_is_unreachable(unused_port: int) -> None:
    proc = subprocess.run(
        [str(BIN / "chatbot-sse"), "chat", f"http://127.0.0.1:{unused_port}"],
        input="hello\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"error: cannot reach http://127.0.0.1:{unused_port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_withserver_uses_a_running_server(fake: Fake) -> None:
    _, url = fake()
    assert withserver(["--url", url, "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_chatbot_sse_loadtest_is_the_same_command(fake: Fake) -> None:
    _, url = fake(chunks=3)
    proc = subprocess.run(
        [str(BIN / "chatbot-sse"), "loadtest", url, "-n", "5", "--multi-turn", "--turns", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "completed 5" in proc.stdout
