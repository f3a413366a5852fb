"""The load tester's numbers are true: checked against a live fake server's own counts."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from chatbot_sse.loadtest import Run, RunConfig, StreamOptions, summarize
from chatbot_sse.loadtest.report import client_bound_warning, timeseries
from chatbot_sse.loadtest.runner import REFUSED_PAUSE, RunResult
from chatbot_sse.loadtest.transport import Pool, Target, build_request, open_exchange
from loadtest.fake_server import FakeChatServer

Fake = Callable[..., tuple[FakeChatServer, str]]


async def run(url: str, **kwargs: Any) -> tuple[RunResult, dict[str, Any]]:
    stream = StreamOptions(**kwargs.pop("stream", {}))
    result = await Run(RunConfig(url=url, stream=stream, **kwargs)).execute()
    return result, summarize(result)


async def test_counts_match_what_the_server_counted(fake: Fake) -> None:
    app, url = fake(chunks=7)
    result, s = await run(url, requests=60, concurrency=8)
    assert s["requests_total"] == s["requests_completed"] == 60 == app.counts["requests"]
    assert s["requests_completed"] == app.counts["completed"]
    assert s["requests_failed"] == 0
    assert s["failures_by_kind"] == {}
    assert s["chunks_total"] == 60 * 7 == sum(row["chunks"] for row in timeseries(result))
    assert sum(row["completed"] for row in timeseries(result)) == 60
    assert s["pings_total"] == 60
    assert s["streams_per_s"] == pytest.approx(60 / s["elapsed_s"])
    assert sorted(r.index for r in result.records) == list(range(60))
    assert all(len(r.itl_s) == 6 for r in result.records)


async def test_connections_are_kept_alive_and_reused(fake: Fake) -> None:
    app, url = fake(chunks=5)
    _, s = await run(url, requests=60, concurrency=6)
    assert s["requests_completed"] == 60
    assert s["connections_opened"] == len(app.clients) <= 6
    assert s["connections_reused"] == 60 - s["connections_opened"]


async def test_the_clients_own_cpu_is_reported_and_warned_about_near_a_core(fake: Fake) -> None:
    _, url = fake(chunks=5)
    result, s = await run(url, requests=40, concurrency=4)
    assert result.client_cpu_s > 0
    assert s["client_cpu_cores"] == pytest.approx(result.client_cpu_s / result.elapsed_s)
    assert s["client_cpu_cores"] < 4  # this process: the client, and here the fake server too
    assert client_bound_warning({"client_cpu_cores": 0.5}) is None
    warning = client_bound_warning({"client_cpu_cores": 0.97, "requests_completed": 40})
    assert warning is not None
    assert "0.97 of a core" in warning


async def test_without_keep_alive_every_stream_has_its_own_connection(fake: Fake) -> None:
    app, url = fake(chunks=5)
    _, s = await run(url, requests=30, concurrency=6, stream={"keep_alive": False})
    assert s["requests_completed"] == 30
    assert len(app.clients) == 30
    assert s["connections_opened"] is None


async def test_a_connection_the_server_closes_after_its_reply_is_not_reused(fake: Fake) -> None:
    app, url = fake(chunks=5, close_connections=True)
    _, s = await run(url, requests=20, concurrency=4)
    assert s["requests_completed"] == 20
    assert s["connections_opened"] == 20 == len(app.clients)
    assert s["connections_reused"] == 0


async def test_connections_the_server_closed_while_idle_are_replaced(fake: Fake) -> None:
    # The server closes idle connections after 0.05 s; users think 0.4 s between turns, so
    # the second and third turns find their connection closed (8 of them; on a loaded machine
    # the server's timer may be late for some), and none may fail for it.
    app, url = fake(chunks=3, keep_alive_timeout=0.05)
    _, s = await run(
        url, requests=12, concurrency=2, multi_turn=True, turns=3, think_time=0.4,
        verify_history=False,
    )  # fmt: skip
    assert s["requests_failed"] == 0
    assert s["requests_completed"] == 12
    assert s["connections_opened"] == len(app.clients)  # the client counts what the server saw
    assert s["connections_opened"] > 2  # more than one per user: closed ones were replaced


async def test_a_connection_idle_too_long_is_closed_not_reused(fake: Fake) -> None:
    _, url = fake(chunks=3)
    target = await Target.resolve(url)
    pool = Pool(max_idle_s=0.05)
    request = build_request(target, "GET", "/metrics", [], b"", keep_alive=True)
    sink = _Discard()
    exchange, connect_s = await open_exchange(target, request, sink, pool=pool)
    assert connect_s is not None
    assert await exchange.done is True
    assert pool.give(exchange)
    again, reused_connect_s = await open_exchange(target, request, sink, pool=pool)
    assert again is exchange  # idle for less than 0.05 s
    assert reused_connect_s is None
    assert await again.done is True
    pool.give(again)
    await asyncio.sleep(0.1)
    fresh, _ = await open_exchange(target, request, sink, pool=pool)
    assert fresh is not exchange
    assert not exchange.reusable  # closed by the pool
    assert await fresh.done is True
    assert (pool.opened, pool.reused) == (2, 1)
    pool.give(fresh)
    pool.close()


async def test_a_connection_that_answers_twice_is_not_reused() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def answer_twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response + response)  # one request, two responses, one read
            await writer.drain()
            await reader.read()  # until the client closes
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(answer_twice, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        target = await Target.resolve(f"http://127.0.0.1:{port}")
        pool = Pool()
        request = build_request(target, "GET", "/", [], b"", keep_alive=True)
        exchange, _ = await open_exchange(target, request, _Discard(), pool=pool)
        assert await exchange.done is True  # the first response is the answer
        assert not exchange.reusable
        assert not pool.give(exchange)
        assert pool.take() is None


class _Discard:
    def on_head(self, status: int, headers: dict[str, str]) -> bool:
        return False

    def on_body(self, data: bytes) -> bool:
        return False


async def test_injected_http_failures_are_counted_by_kind(fake: Fake) -> None:
    app, url = fake(fail_every=5, fail_status=503)
    _, s = await run(url, requests=50, concurrency=5)
    assert s["failures_by_kind"] == {"http_503": 10} == {"http_503": app.counts["http_503"]}
    assert s["requests_completed"] == 40 == app.counts["completed"]


@pytest.mark.parametrize(
    ("message", "kind", "reason"),
    [
        ("fail500", "http_500", None),
        ("fail429", "http_429", None),
        ("error-event", "error_event", "engine_error"),
        ("truncate", "protocol", "missing_completed"),
        ("mismatch", "protocol", "content_mismatch"),
        ("dup-id", "protocol", "duplicate_id"),
        ("skip-id", "protocol", "missing_id"),
        ("garbage", "protocol", "bad_event"),
        ("stall", "timeout", None),
        ("reset", "connection", None),
    ],
)
async def test_each_fault_is_reported_as_its_kind(
    fake: Fake, message: str, kind: str, reason: str | None
) -> None:
    _, url = fake(chunks=5)
    result, s = await run(
        url, requests=3, concurrency=3, messages=[message], stream={"timeout": 0.5}
    )
    assert s["failures_by_kind"] == {kind: 3}
    assert {r.reason for r in result.records} == {reason}
    if reason == "content_mismatch":
        assert s["content_mismatches"] == 3


async def test_refused_connections_are_connection_failures() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        _, s = await run(f"http://127.0.0.1:{port}", requests=4, concurrency=2)
        assert s["failures_by_kind"] == {"connection": 4}
        assert client_bound_warning(s) is None  # no stream ran: no pace to speak of
        # A server that is down does not make the users spin: each waits before its next try.
        _, s = await run(f"http://127.0.0.1:{port}", duration=0.5, concurrency=2)
    assert 4 <= s["requests_total"] <= 2 * (0.5 / REFUSED_PAUSE + 1)


async def test_multi_turn_keeps_conversations_and_checks_history(fake: Fake) -> None:
    app, url = fake(chunks=4)
    result, s = await run(url, requests=12, concurrency=2, multi_turn=True, turns=3)
    assert s["requests_completed"] == 12
    assert s["conversations_checked"] == 4 == len(app.conversations)
    assert all(len(c.messages) == 6 for c in app.conversations.values())
    by_session: dict[int, set[str | None]] = {}
    for r in result.records:
        by_session.setdefault(r.session, set()).add(r.conversation_id)
    assert all(len(ids) == 1 for ids in by_session.values())


async def test_a_dropped_turn_in_the_history_is_detected(fake: Fake) -> None:
    _, url = fake(chunks=4, drop_history_turn=1)
    result, s = await run(
        url, requests=12, concurrency=2, multi_turn=True, turns=3, messages=["a", "bb", "ccc"]
    )
    assert s["failures_by_kind"] == {"history_mismatch": 4}
    assert s["conversations_mismatched"] == 4
    assert {r.turn for r in result.records if not r.ok} == {1}


async def test_drops_resume_with_last_event_id_byte_exact(fake: Fake) -> None:
    app, url = fake(chunks=12, chunk_delay=0.002)
    _, s = await run(url, requests=30, concurrency=6, seed=7, stream={"drop_rate": 0.5})
    assert s["requests_completed"] == 30
    assert s["drops"] == s["resumes"] == app.counts["resumes"] > 0
    assert s["resumed_ok"] == s["resumes"]


async def test_drops_without_resume_support_are_their_own_kind(fake: Fake) -> None:
    app, url = fake(chunks=12, resume=False)
    _, s = await run(url, requests=20, concurrency=4, seed=3, stream={"drop_rate": 1.0})
    assert (
        s["failures_by_kind"]
        == {"resume_unsupported": 20}
        == {"resume_unsupported": app.counts["resume_404"]}
    )


async def test_slow_reader_still_gets_every_byte(fake: Fake) -> None:
    # The reply is spread over 50 ms, so it takes at least two reads; the slow reader
    # pauses 100 ms after each read, a normal one not at all.
    _, url = fake(chunks=5, chunk_delay=0.01)
    _, normal = await run(url, requests=4, concurrency=4)
    _, s = await run(
        url, requests=4, concurrency=4, stream={"slow_reader": True, "read_pause": 0.1}
    )
    assert s["requests_completed"] == 4
    assert s["e2e_s"]["p50"] >= 0.1
    assert s["e2e_s"]["p50"] > normal["e2e_s"]["p50"] + 0.03


async def test_open_loop_rate_and_duration(fake: Fake) -> None:
    _, url = fake(chunks=3, chunk_delay=0.01)
    result, s = await run(url, requests=None, duration=1.0, rate=40.0, seed=1)
    assert result.config.to_json()["mode"] == "open_loop"
    assert 15 <= s["requests_total"] <= 70  # Poisson(40): far outside is a bug
    assert s["requests_failed"] == 0
    assert max(r.started_s for r in result.records) < 1.0


async def test_ramp_up_starts_users_linearly(fake: Fake) -> None:
    _, url = fake(chunks=3, chunk_delay=0.01)
    result, _ = await run(url, requests=None, duration=0.8, concurrency=4, ramp_up=0.8)
    first: dict[int, float] = {}
    for r in sorted(result.records, key=lambda r: r.started_s):
        first.setdefault(r.user, r.started_s)
    for user in range(4):
        assert first[user] == pytest.approx(0.2 * user, abs=0.08)


async def test_percentiles_match_the_records(fake: Fake) -> None:
    _, url = fake(chunks=6, chunk_delay=0.001)
    result, s = await run(url, requests=40, concurrency=10)
    ok = [r for r in result.records if r.ok]
    for key, values in (
        ("ttft_s", [r.ttft_s for r in ok if r.ttft_s is not None]),
        ("e2e_s", [r.e2e_s for r in ok if r.e2e_s is not None]),
        ("itl_s", [gap for r in ok for gap in r.itl_s]),
    ):
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        for p in (50, 90, 95, 99):
            assert s[key][f"p{p}"] == pytest.approx(cuts[p - 1], rel=1e-9, abs=1e-12)
        assert s[key]["max"] == max(values)
        assert s[key]["mean"] == pytest.approx(statistics.fmean(values))


async def test_duration_alone_stops_new_streams(fake: Fake) -> None:
    _, url = fake(chunks=3, chunk_delay=0.02)
    t0 = time.perf_counter()
    _, s = await run(url, requests=None, duration=0.5, concurrency=3)
    assert time.perf_counter() - t0 < 2.0
    assert s["requests_total"] >= 3
