"""`make bench-quick` as a test: every scenario runs and gives sane numbers.

Timing ratios are not asserted (this machine is shared and noisy, and CI has
no say over that); what is asserted is what would make the benchmark a lie:
a server that errs, a reply cut short or malformed, a measurement missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchsupport import run_bench

SERVERS = {
    "bare_asgi",
    "sse_starlette_app",
    "fastapi_native",
    "chatbot_sse",
    "chatbot_sse_gunicorn",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make bench-install)")
    pytest.importorskip("sse_starlette")
    pytest.importorskip("psutil")
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    run_bench("run", "--quick", "--drivers", "python", "--out", str(out), timeout=110)
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_every_scenario_ran_without_breakage(results: dict[str, object]) -> None:
    assert results["mode"] == "quick"
    assert results["health"] == []
    servers = results["servers"]
    assert isinstance(servers, dict)
    assert set(servers) == SERVERS
    for name, server in servers.items():
        assert "error" not in server, (name, server.get("error"))


def test_every_reply_complete_with_22_events(results: dict[str, object]) -> None:
    for name, server in results["servers"].items():  # type: ignore[attr-defined]
        assert server["verify"]["problems"] == [], name
        assert server["verify"]["events_per_reply"] == [22], name
        probe = server["wrk_probe"]["probe"]
        assert probe["complete"] > 0, name
        assert probe["incomplete"] == 0, name
        assert server["python"]["incomplete"] == 0, name
        paced = server["paced"]
        assert paced["complete"] == paced["streams"] == 100, name


def test_numbers_are_sane(results: dict[str, object]) -> None:
    for name, server in results["servers"].items():  # type: ignore[attr-defined]
        assert server["wrk"]["replies_per_s"] > 0, name
        assert server["wrk"]["non_2xx"] == 0, name
        assert server["python"]["replies_per_s"] > 0, name
        probe = server["wrk_probe"]["probe"]
        assert 0 < probe["connected_s"]["p50"] <= probe["ttft_s"]["p50"] < 30, name
        paced = server["paced"]
        assert paced["lateness_s"]["p99"] > -0.05, name
        assert 10 < paced["rss_peak_mb"] < 4096, name
        # The three phases of a reply's lateness: each sane, and together the lateness.
        phases = paced["phases_s"]
        assert 0 <= phases["start"]["p50"] < 30, name
        assert phases["drift"]["p50"] > -0.05, name
        assert 0 <= phases["end"]["p50"] < 30, name
        parts = sum(phases[phase]["mean"] for phase in ("start", "drift", "end"))
        assert abs(parts - paced["lateness_s"]["mean"]) < 0.005, name
    assert {t["target"] for t in results["targets"]}  # type: ignore[attr-defined]
    machine = results["machine"]
    assert machine["nproc"] >= 1  # type: ignore[index]
    assert machine["python"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("stack", "loop", "http", "ours"),
    [
        ("uvloop", "uvloop", "httptools", "RequestDeadlineProtocol"),
        ("asyncio", "asyncio", "h11", "H11DeadlineProtocol"),
    ],
)
def test_every_server_runs_on_the_chosen_stack(stack: str, loop: str, http: str, ours: str) -> None:
    import importlib

    from bench.servers import SPECS

    def option(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    for spec in SPECS:
        argv = spec.command(8000, stack)
        if spec.gunicorn:  # the worker class (`-k`, over gunicorn.conf.py's) sets the stack
            module, _, name = option(argv, "-k").rpartition(".")
            config = getattr(importlib.import_module(module), name).CONFIG_KWARGS
            assert config["loop"] == ("auto" if stack == "uvloop" else loop)
            assert config["http"] == f"chatbot_sse.request_deadline:{ours}"
            continue
        assert option(argv, "--loop") == loop
        assert argv.count("--http") == 1
        expected = f"chatbot_sse.request_deadline:{ours}" if spec.ours else http
        assert option(argv, "--http") == expected


def test_the_default_stack_is_the_judged_one(results: dict[str, object]) -> None:
    config = results["config"]
    assert config["stack"] == "asyncio"  # type: ignore[index]
    assert config["judged"] is False  # type: ignore[index]  # quick: timing never fails it


def test_the_uvloop_stack_runs_end_to_end(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make bench-install)")
    out = tmp_path / "uvloop.json"
    run_bench(
        "run", "--quick", "--stack", "uvloop", "--report-only", "--drivers", "wrk",
        "--servers", "bare_asgi,chatbot_sse,chatbot_sse_gunicorn", "--paced", "20",
        "--out", str(out), timeout=110,
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["config"]["stack"] == "uvloop"
    assert data["config"]["judged"] is False
    assert data["health"] == []
    for name in ("bare_asgi", "chatbot_sse", "chatbot_sse_gunicorn"):
        server = data["servers"][name]
        assert server["verify"]["problems"] == []
        assert server["wrk"]["replies_per_s"] > 0
        assert server["paced"]["complete"] == 20, name
