"""Ratios to the floor, the targets of issue 8, and the tables people read.

Targets are checked for chatbot-sse on one uvicorn worker, the like-for-like
contestant of the one-worker floor; gunicorn's row is shown for information.
`health()` lists what makes a run meaningless whatever the timings: a server
that answered an error, or a reply that was cut short or malformed.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.servers import FLOOR

OURS = "chatbot_sse"
SSE_STARLETTE = "sse_starlette_app"
DRIVERS = ("wrk", "python", "loadtest")


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or data.get(key) is None:
            return None
        data = data[key]
    return data


def _ratio(value: Any, floor: Any) -> float | None:
    if value is None or not floor:
        return None
    return float(value) / float(floor)


METRICS: dict[str, tuple[str, ...]] = {
    "replies_per_s_wrk": ("wrk", "replies_per_s"),
    "server_cpu_cores_wrk": ("wrk", "server_cpu_cores"),
    "replies_per_s_python": ("python", "replies_per_s"),
    "replies_per_s_loadtest": ("loadtest", "replies_per_s"),
    "connected_p50_s": ("wrk_probe", "probe", "connected_s", "p50"),
    "connected_p99_s": ("wrk_probe", "probe", "connected_s", "p99"),
    "ttft_p50_s": ("wrk_probe", "probe", "ttft_s", "p50"),
    "ttft_p99_s": ("wrk_probe", "probe", "ttft_s", "p99"),
    "python_ttft_p50_s": ("python", "ttft_s", "p50"),
    "python_ttft_p99_s": ("python", "ttft_s", "p99"),
    "loadtest_connected_p50_s": ("loadtest", "connected_s", "p50"),
    "loadtest_ttft_p50_s": ("loadtest", "ttft_s", "p50"),
    "paced_complete": ("paced", "complete"),
    "paced_lateness_p99_s": ("paced", "lateness_s", "p99"),
    "paced_rss_peak_mb": ("paced", "rss_peak_mb"),
}


def metrics(server: dict[str, Any]) -> dict[str, Any]:
    return {name: _get(server, *path) for name, path in METRICS.items()}


def ratios(servers: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Every metric of every server divided by the floor's."""
    floor = metrics(servers[FLOOR]) if FLOOR in servers else {}
    return {
        name: {k: _ratio(v, floor.get(k)) for k, v in metrics(result).items()}
        for name, result in servers.items()
    }


def round_ratios(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """chatbot-sse's wrk replies/s over the floor's and sse-starlette's, round by round.

    A diagnostic beside the targets (which take each server's median round): the servers of
    one round run minutes apart, those of different rounds up to ten, and on a shared
    machine the speed of everything drifts meanwhile (20-30 % within one run seen here).
    A ratio within a round cancels what drifts slower than a round.
    """

    def per_round(other: str) -> list[float | None]:
        pairs = zip(rounds.get(OURS, []), rounds.get(other, []), strict=False)
        return [
            _ratio(_get(ours, "wrk", "replies_per_s"), _get(peer, "wrk", "replies_per_s"))
            for ours, peer in pairs
        ]

    out: dict[str, Any] = {}
    for key, other in (("floor", FLOOR), ("sse_starlette", SSE_STARLETTE)):
        values = per_round(other)
        known = sorted(v for v in values if v is not None)
        median = known[(len(known) - 1) // 2] if known else None
        out[key] = {"rounds": values, "median": median}
    return out


def round_ratios_line(results: dict[str, Any]) -> str | None:
    """One sentence for the tables, or None when the run had one round or no such servers."""
    rr = results.get("round_ratios") or {}
    parts = []
    for key, label in (("floor", "the floor"), ("sse_starlette", "sse-starlette")):
        entry = rr.get(key) or {}
        values = [v for v in entry.get("rounds", []) if v is not None]
        if len(values) > 1 and entry.get("median") is not None:
            listed = ", ".join(f"{v:.2f}" for v in values)
            parts.append(f"over {label} {listed} (median {entry['median']:.2f}x)")
    if not parts:
        return None
    return "chatbot-sse's wrk replies/s round by round, " + "; ".join(parts) + "."


def _target(name: str, value: float | None, op: str, limit: float) -> dict[str, Any]:
    passed = value is not None and (value >= limit if op == ">=" else value <= limit)
    return {"target": name, "value": value, "op": op, "limit": limit, "passed": passed}


def targets(servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 8's targets, as ratios within this run."""
    if OURS not in servers or FLOOR not in servers:
        return []
    ours, floor = metrics(servers[OURS]), metrics(servers[FLOOR])
    out = []
    for driver in DRIVERS:
        key = f"replies_per_s_{driver}"
        if ours[key] is None:
            continue
        out.append(
            _target(f"replies/s ({driver}) >= 0.6x floor", _ratio(ours[key], floor[key]), ">=", 0.6)
        )
        if SSE_STARLETTE in servers:
            peer = metrics(servers[SSE_STARLETTE])[key]
            out.append(
                _target(
                    f"replies/s ({driver}) >= 2.5x sse-starlette",
                    _ratio(ours[key], peer),
                    ">=",
                    2.5,
                )
            )
    paced = servers[OURS].get("paced")
    if paced:
        share = paced["complete"] / paced["streams"] if paced["streams"] else 0.0
        out.append(_target(f"paced: all {paced['streams']} replies complete", share, ">=", 1.0))
        out.append(
            _target(
                "paced: p99 lateness <= 2x floor",
                _ratio(ours["paced_lateness_p99_s"], floor["paced_lateness_p99_s"]),
                "<=",
                2.0,
            )
        )
        out.append(
            _target(
                "paced: peak memory <= 3x floor",
                _ratio(ours["paced_rss_peak_mb"], floor["paced_rss_peak_mb"]),
                "<=",
                3.0,
            )
        )
    if ours["connected_p50_s"] is not None:
        out.append(
            _target(
                "time to connected (p50, under wrk) <= 1.5x floor",
                _ratio(ours["connected_p50_s"], floor["connected_p50_s"]),
                "<=",
                1.5,
            )
        )
    if ours["loadtest_connected_p50_s"] is not None:
        out.append(
            _target(
                "time to connected (p50, loadtest) <= 1.5x floor",
                _ratio(ours["loadtest_connected_p50_s"], floor["loadtest_connected_p50_s"]),
                "<=",
                1.5,
            )
        )
    return out  # fmt: skip


def health(servers: dict[str, dict[str, Any]]) -> list[str]:
    """Problems that make the run invalid: errors, cut or malformed replies."""
    problems = []
    for name, result in servers.items():
        if result.get("error"):
            problems.append(f"{name}: {result['error']}")
        for problem in _get(result, "verify", "problems") or []:
            problems.append(f"{name}: verification: {problem}")
        for phase in ("wrk", "wrk_probe"):
            wrk = result.get(phase) or {}
            if wrk.get("non_2xx"):
                problems.append(f"{name}: {phase}: {wrk['non_2xx']} non-2xx responses")
            if wrk and not wrk.get("requests"):
                problems.append(f"{name}: {phase}: no request completed")
        for phase, path in (
            ("probe", ("wrk_probe", "probe")),
            ("python", ("python",)),
            ("loadtest", ("loadtest",)),
        ):
            part = _get(result, *path)
            if part and part.get("incomplete"):
                problems.append(
                    f"{name}: {phase}: {part['incomplete']} of {part['requests']} replies incomplete {part.get('errors', '')}"
                )
        paced = result.get("paced")
        if paced and paced["problems"]:
            problems.append(f"{name}: paced: {paced['problems']}")
    return problems  # fmt: skip


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def _x(value: Any) -> str:
    return "" if value is None else f" ({value:.2f}x)"


def tables(results: dict[str, Any]) -> list[Table]:
    servers, rat = results["servers"], results["ratios"]
    load = Table(
        title="Under the wrk load (-t1 -c50): replies/s, time to connected / first message"
    )
    for col in ("server", "events", "replies/s wrk", "busy cores", "replies/s py-client", "replies/s loadtest",
                "connected p50 ms", "connected p99 ms", "TTFT p50 ms", "TTFT p99 ms"):  # fmt: skip
        load.add_column(col, justify="left" if col == "server" else "right")
    paced = Table(
        title=f"Paced: {results['config']['paced_streams']} concurrent replies at 20 events/s"
    )
    for col in ("server", "complete", "lateness p50 s", "lateness p99 s", "peak RSS MB"):
        paced.add_column(col, justify="left" if col == "server" else "right")
    for name, result in servers.items():
        m, r = metrics(result), rat.get(name, {})
        label = result.get("label", name)
        events = ",".join(str(e) for e in _get(result, "verify", "events_per_reply") or []) or "-"

        def rps(key: str, m: dict[str, Any] = m, r: dict[str, Any] = r) -> str:
            return "-" if m[key] is None else f"{m[key]:,.0f}{_x(r[key])}"

        load.add_row(
            label, events, rps("replies_per_s_wrk"),
            "-" if m["server_cpu_cores_wrk"] is None else f"{m['server_cpu_cores_wrk']:.2f}",
            rps("replies_per_s_python"),
            rps("replies_per_s_loadtest"),
            _ms(m["connected_p50_s"]) + _x(r["connected_p50_s"]),
            _ms(m["connected_p99_s"]) + _x(r["connected_p99_s"]),
            _ms(m["ttft_p50_s"]) + _x(r["ttft_p50_s"]),
            _ms(m["ttft_p99_s"]) + _x(r["ttft_p99_s"]),
        )  # fmt: skip
        p = result.get("paced")
        if p:
            paced.add_row(
                label,
                f"{p['complete']}/{p['streams']}",
                f"{p['lateness_s']['p50']:.3f}" if p["lateness_s"]["p50"] is not None else "-",
                (
                    f"{m['paced_lateness_p99_s']:.3f}"
                    if m["paced_lateness_p99_s"] is not None
                    else "-"
                )
                + _x(r["paced_lateness_p99_s"]),
                f"{p['rss_peak_mb']:.0f}{_x(r['paced_rss_peak_mb'])}",
            )
    judged = "judged" if results["config"].get("judged", True) else "reported, not judged"
    verdicts = Table(
        title=f"Issue 8 targets (chatbot-sse on 1 uvicorn worker vs the floor; "
        f"{_stack(results)}: {judged})"
    )
    for col in ("target", "value", "limit", "result"):
        verdicts.add_column(col)
    for t in results["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        mark = "[green]pass[/green]" if t["passed"] else "[red]FAIL[/red]"
        verdicts.add_row(t["target"], value, f"{t['op']} {t['limit']}", mark)
    return [load, paced, verdicts]


def print_report(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=200)
    for table in tables(results):
        console.print(table)
    line = round_ratios_line(results)
    if line is not None:
        console.print(line)
    for problem in results["health"]:
        console.print(f"[red]broken:[/red] {problem}")


def _stack(results: dict[str, Any]) -> str:
    stack = results["config"].get("stack", "uvloop")  # runs before --stack were all uvloop
    return "uvloop + httptools" if stack == "uvloop" else "asyncio + h11"


def markdown(results: dict[str, Any]) -> str:
    """The tables as Markdown, for docs/bench.md and the README."""
    servers, rat = results["servers"], results["ratios"]
    m_ = results["machine"]
    lines = [
        f"Run {results['date']} ({results['mode']}), {m_['nproc']} cores {m_['cpu_model']}, "
        f"Python {m_['python']}; uvicorn on {_stack(results)}; {results['config']['wrk']}; "
        f"paced: {results['config']['paced_streams']} concurrent replies at 20 events/s.",
        "",
        "| server | replies/s wrk | busy cores | replies/s py-client | replies/s loadtest | connected p50 / p99 ms "
        "| TTFT p50 / p99 ms | paced complete | paced lateness p99 s | paced peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in servers.items():
        m, r = metrics(result), rat.get(name, {})

        def num(key: str, fmt: str, scale: float = 1.0, m: dict[str, Any] = m) -> str:
            return "-" if m[key] is None else format(m[key] * scale, fmt)

        def x(key: str, r: dict[str, Any] = r, name: str = name) -> str:
            return "" if r.get(key) is None or name == FLOOR else f" ({r[key]:.2f}x)"

        p = result.get("paced") or {}
        lines.append(
            f"| {result.get('label', name)} "
            f"| {num('replies_per_s_wrk', ',.0f')}{x('replies_per_s_wrk')} "
            f"| {num('server_cpu_cores_wrk', '.2f')} "
            f"| {num('replies_per_s_python', ',.0f')}{x('replies_per_s_python')} "
            f"| {num('replies_per_s_loadtest', ',.0f')}{x('replies_per_s_loadtest')} "
            f"| {num('connected_p50_s', '.1f', 1000)}{x('connected_p50_s')} / "
            f"{num('connected_p99_s', '.1f', 1000)} "
            f"| {num('ttft_p50_s', '.1f', 1000)}{x('ttft_p50_s')} / {num('ttft_p99_s', '.1f', 1000)} "
            f"| {p.get('complete', '-')}/{p.get('streams', '-')} "
            f"| {num('paced_lateness_p99_s', '.3f')}{x('paced_lateness_p99_s')} "
            f"| {num('paced_rss_peak_mb', '.0f')}{x('paced_rss_peak_mb')} |"
        )
    lines += [
        "",
        "| target (chatbot-sse, 1 worker) | value | limit | result |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in results["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(
            f"| {t['target']} | {value} | {t['op']} {t['limit']} | {'pass' if t['passed'] else 'FAIL'} |"
        )
    line = round_ratios_line(results)
    if line is not None:
        lines += ["", line]
    for problem in results["health"]:
        lines.append(f"\nbroken: {problem}")
    return "\n".join(lines) + "\n"
