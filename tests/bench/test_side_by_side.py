"""`bench.side_by_side` runs the floor, another checkout and this one on real servers.

Here the other checkout is a copy of this one's package with a marker in it, so
the test can tell that the `base` servers really ran the other code: the copy
answers `/health` with another version. Timing is not asserted; what is, is
what would make a comparison a lie: a reply cut short, a wave missing, the base
running this checkout's code.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from bench import measure, servers, side_by_side

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkout = tmp_path_factory.mktemp("base")
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__"))
    init = checkout / "src" / "chatbot_sse" / "__init__.py"
    text = init.read_text()
    assert "__version__" in text
    init.write_text(text + '\n__version__ = "0.0.0+base"\n')
    return checkout


def test_the_base_server_runs_the_base_checkout(base: Path) -> None:
    spec = next(s for s in servers.SPECS if s.name == "chatbot_sse")
    with servers.start(spec, stack="asyncio", source=base) as server:
        health = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=10).json()
        assert asyncio.run(measure.verify(server))["problems"] == []
    assert health["version"] == "0.0.0+base"


def test_a_small_comparison_runs_every_wave_whole(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "sbs.json"
    code = side_by_side.main(
        ["--base", str(base), "--stack", "asyncio", "--rounds", "1", "--waves", "1",
         "--replies", "20", "--pace", "0.01", "--store", "memory", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["all_complete"]
    for name in side_by_side.NAMES:
        [wave] = result["waves"][name]
        assert wave["complete"] == 20
        assert wave["problems"] == {}
        assert wave["cpu_s"] >= 0
        assert wave["p99_s"] is not None
    assert result["this_over_base_cpu"] > 0


def test_a_base_that_is_not_a_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        side_by_side.main(["--base", str(tmp_path)])
    assert exit_.value.code == 2
