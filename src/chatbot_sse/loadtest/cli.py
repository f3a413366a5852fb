"""`chatbot-sse loadtest` / `python -m chatbot_sse.loadtest`: options in, table and files out.

Thin on purpose: parsing options into a `RunConfig`, the progress display and
the exit status live here; scheduling is `runner.py`, numbers are `report.py`.
Exit status: 0 when failures stay within the budget, 1 when they do not, 2 for
bad usage or an unreachable URL.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from chatbot_sse.loadtest.client import StreamOptions
from chatbot_sse.loadtest.report import (
    client_bound_warning,
    summarize,
    summary_table,
    to_json,
    write_json,
    write_records,
)
from chatbot_sse.loadtest.runner import DEFAULT_MESSAGE, Run, RunConfig, RunResult

__all__ = ["app", "loadtest", "main"]

T = TypeVar("T")
app = typer.Typer(add_completion=False, help=__doc__)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed: it roughly halves the client's CPU per event."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def parse_headers(values: list[str]) -> list[tuple[str, str]]:
    headers = []
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(
                f"expected 'Name: value', got {value!r}", param_hint="--header"
            )
        headers.append((name.strip(), content.strip()))
    return headers


def load_messages(messages: list[str], messages_file: Path | None) -> list[str]:
    out = list(messages)
    if messages_file is not None:
        lines = messages_file.read_text(encoding="utf-8").splitlines()
        read = [line.strip() for line in lines if line.strip()]
        if not read:
            raise ValueError(f"{messages_file} holds no message (one per line)")
        out.extend(read)
    return out or [DEFAULT_MESSAGE]


def check_writable(*paths: Path | None) -> None:
    """ValueError unless each given path can be written: found before the run, not after it."""
    for path in paths:
        if path is None:
            continue
        existed = path.exists()
        if existed and not path.is_file() and not path.is_dir():
            continue  # a device or a pipe (/dev/stdout): opening it to probe could block
        try:
            with path.open("a"):  # what the run will do, minus the writing
                pass
        except OSError as exc:
            raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
        if not existed:
            path.unlink()


def allowed_failures(total: int, max_failures: int, failure_budget: float | None) -> int:
    """The most failed streams a run may have and still pass."""
    if failure_budget is None:
        return max_failures
    return max(max_failures, math.floor(failure_budget * total))


def _execute(run: Run, console: Console, quiet: bool) -> RunResult:
    cfg = run.config
    if quiet or not console.is_terminal:
        return run_async(run.execute())
    total = float(cfg.requests) if cfg.requests is not None else cfg.duration
    progress = Progress(
        TextColumn("[bold]load test"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("", total=total)

    def tick(r: Run) -> None:
        done, failed = r.completed, r.failed
        elapsed = max(r.elapsed, 1e-9)
        position = done + failed if cfg.requests is not None else min(elapsed, total or 0.0)
        progress.update(
            task,
            completed=position,
            description=(
                f"ok {done}  failed {failed}  active {r.timeline.active}  "
                f"{done / elapsed:,.1f} streams/s  {r.timeline.total_chunks / elapsed:,.0f} chunks/s"
            ),
        )

    with progress:
        return run_async(run.execute(on_tick=tick))


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="Base URL of the chat server.")] = (
        "http://127.0.0.1:8000"
    ),
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests", "-n", min=1, help="Streams to send (default 100 without --duration)."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Concurrent users (closed loop).")
    ] = 10,
    duration: Annotated[
        float | None, typer.Option(min=0.001, help="Start no new stream after this many seconds.")
    ] = None,
    ramp_up: Annotated[
        float, typer.Option(min=0, help="Seconds over which load grows linearly to its target.")
    ] = 0.0,
    rate: Annotated[
        float | None,
        typer.Option(min=0.001, help="Open loop: Poisson arrivals of sessions per second."),
    ] = None,
    multi_turn: Annotated[
        bool, typer.Option("--multi-turn", help="Each user keeps its conversation for --turns.")
    ] = False,
    turns: Annotated[
        int, typer.Option(min=1, help="Turns per conversation with --multi-turn.")
    ] = 3,
    think_time: Annotated[float, typer.Option(min=0, help="Seconds between a user's turns.")] = 0.0,
    message: Annotated[
        list[str] | None, typer.Option("--message", "-m", help="A message to send (repeatable).")
    ] = None,
    messages_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Messages to pick from, one per line."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write config, summary and time series here.")
    ] = None,
    records_out: Annotated[
        Path | None,
        typer.Option("--records", help="Write every stream's record here (JSON lines)."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of latency and throughput over time.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds allowed per stream.")] = 60.0,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value' (repeatable).")
    ] = None,
    max_failures: Annotated[
        int, typer.Option(min=0, help="Failed streams allowed before the exit status is 1.")
    ] = 0,
    failure_budget: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="Fraction of streams allowed to fail (e.g. 0.01)."),
    ] = None,
    drop_rate: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Chaos: fraction of streams dropped mid-reply and resumed."
        ),
    ] = 0.0,
    slow_reader: Annotated[
        bool, typer.Option("--slow-reader", help="Chaos: read slowly, with a 4 KiB receive buffer.")
    ] = False,
    read_pause: Annotated[
        float, typer.Option(min=0, help="Seconds a slow reader waits after each read.")
    ] = 0.02,
    keep_alive: Annotated[
        bool,
        typer.Option(
            help="Reuse connections between streams (not with --slow-reader); "
            "--no-keep-alive opens one per request."
        ),
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Seed for message choice and drops.")] = None,
    history_check: Annotated[
        bool, typer.Option(help="With --multi-turn, verify each conversation's history at the end.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.")] = False,
) -> None:
    """Stream chat replies under load; check every reply; report what users would feel."""
    if requests is None and duration is None:
        requests = 100
    console = Console(stderr=True)
    try:
        check_writable(json_out, records_out, plot)
        messages = load_messages(message or [], messages_file)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    config = RunConfig(
        url=url,
        requests=requests,
        concurrency=concurrency,
        duration=duration,
        ramp_up=ramp_up,
        rate=rate,
        multi_turn=multi_turn,
        turns=turns,
        think_time=think_time,
        messages=messages,
        seed=seed,
        verify_history=history_check,
        stream=StreamOptions(
            headers=parse_headers(header or []),
            timeout=timeout,
            drop_rate=drop_rate,
            slow_reader=slow_reader,
            read_pause=read_pause,
            keep_alive=keep_alive,
        ),
    )
    try:
        result = _execute(Run(config), console, quiet)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    summary = summarize(result)
    warning = client_bound_warning(summary)
    if warning is not None:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if json_out is not None:
        write_json(json_out, to_json(result, summary))
    if records_out is not None:
        write_records(records_out, result.records)
    if plot is not None:
        from chatbot_sse.loadtest.plot import write_plot

        write_plot(plot, to_json(result, summary)["timeseries"], f"chatbot-sse load test: {url}")
    if not quiet:
        Console().print(summary_table(summary))
    total = summary["requests_total"]
    if total == 0 or summary["requests_failed"] > allowed_failures(
        total, max_failures, failure_budget
    ):
        raise typer.Exit(1)


def main() -> None:
    app()
