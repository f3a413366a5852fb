"""A change measured on paced waves: the floor, another checkout and this one, in turns.

    git worktree add --detach /tmp/base HEAD~1
    .venv/bin/python -m bench.side_by_side --base /tmp/base --stack uvloop

Each round starts the floor, then chatbot-sse from `--base` (its `src` first on the server's
path), then chatbot-sse from this checkout, one at a time, and sends each `--waves` waves of
`--replies` paced replies. What it compares is the server's CPU time per wave (user + system,
all its processes) and the p99 lateness, by the median over every wave: on these shared
machines a server's speed drifts by tens of per cent within minutes, so only rounds that
alternate, close together, compare a change with what it replaced. The floor says how fast the
machine was meanwhile; the p99 ratios to it are the issue's paced target.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import measure, servers

NAMES = ("floor", "base", "this")


def _wave(server: servers.Server, replies: int, pace: float) -> dict[str, Any]:
    before = server.cpu_seconds()
    result = asyncio.run(measure.paced(server, replies, pace))
    if not result["complete"]:  # no lateness to compare: say why rather than fail on a median
        raise RuntimeError(f"no reply of the wave completed: {result['problems']}")
    return {
        "cpu_s": server.cpu_seconds() - before,
        "p99_s": result["lateness_s"]["p99"],
        "p50_s": result["lateness_s"]["p50"],
        "complete": result["complete"],
        "problems": result["problems"],
    }


def run(
    base: Path,
    stack: str = "uvloop",
    rounds: int = 3,
    waves: int = 2,
    replies: int = 1000,
    pace: float = 0.05,
    store: str = "sqlite",
) -> dict[str, Any]:
    """Every wave of every contestant, and the medians."""
    by_name = {spec.name: spec for spec in servers.SPECS}
    ours = dataclasses.replace(by_name["chatbot_sse"], store=store)
    contestants = [
        ("floor", by_name[servers.FLOOR], None),
        ("base", ours, base),
        ("this", ours, None),
    ]
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in NAMES}
    for number in range(rounds):
        for name, spec, source in contestants:
            with servers.start(spec, pace=pace, stack=stack, source=source) as server:
                checked = asyncio.run(measure.verify(server))
                if checked["problems"]:
                    raise RuntimeError(f"{name} answers wrongly: {checked['problems']}")
                for _ in range(waves):
                    found[name].append(_wave(server, replies, pace))
            last = found[name][-waves:]
            print(
                f"round {number + 1}/{rounds} {name:5s}: CPU per wave "
                + " ".join(f"{w['cpu_s']:.3f}" for w in last)
                + " s, p99 "
                + " ".join(f"{w['p99_s']:.3f}" for w in last)
                + " s",
                flush=True,
            )
    medians = {
        name: {
            key: statistics.median(w[key] for w in found[name])
            for key in ("cpu_s", "p99_s", "p50_s")
        }
        for name in NAMES
    }
    floor_p99 = medians["floor"]["p99_s"]
    return {
        "stack": stack,
        "store": store,
        "base": str(base),
        "replies": replies,
        "pace": pace,
        "waves": found,
        "median": medians,
        "this_over_base_cpu": medians["this"]["cpu_s"] / medians["base"]["cpu_s"],
        "this_over_base_p99": medians["this"]["p99_s"] / medians["base"]["p99_s"],
        "p99_over_floor": {
            name: medians[name]["p99_s"] / floor_p99 if floor_p99 else None
            for name in ("base", "this")
        },
        "all_complete": all(w["complete"] == replies for name in NAMES for w in found[name]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--stack", choices=sorted(servers.STACKS), default="uvloop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waves", type=int, default=2, help="waves per server per round")
    parser.add_argument("--replies", type=int, default=1000, help="paced replies per wave")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between chunks")
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--out", type=Path, help="write every wave and the medians here (JSON)")
    args = parser.parse_args(argv)
    if not (args.base / "src" / "chatbot_sse").is_dir():
        parser.error(f"{args.base} is not a checkout of chatbot-sse (no src/chatbot_sse)")
    result = run(
        args.base, args.stack, args.rounds, args.waves, args.replies, args.pace, args.store
    )
    for name in NAMES:
        median = result["median"][name]
        print(
            f"{name:5s} median: CPU per wave {median['cpu_s']:.3f} s, "
            f"p99 {median['p99_s']:.3f} s, p50 {median['p50_s']:.3f} s"
        )
    print(
        f"this / base: CPU {result['this_over_base_cpu']:.3f}, p99 "
        f"{result['this_over_base_p99']:.3f}; p99 over the floor: base "
        f"{result['p99_over_floor']['base']:.2f}x, this {result['p99_over_floor']['this']:.2f}x"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if result["all_complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
