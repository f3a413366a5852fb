"""`bench.instructions` and `bench.server_instructions`: callgrind's count, two runs made one
per-reply figure, and the real server's replies driven and checked."""

from __future__ import annotations

import asyncio

import pytest
from bench.instructions import collected, per_reply
from bench.servers import SPECS, start

from bench import server_instructions

CALLGRIND_EXIT = """==4242== Events    : Ir
==4242== Collected : 4,336,590,221
==4242==
==4242== I   refs:      4,336,590,221
"""


def test_the_count_is_read_from_callgrinds_exit_report() -> None:
    assert collected(CALLGRIND_EXIT) == 4_336_590_221


def test_output_without_a_count_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no instruction count"):
        collected("==1== valgrind: failed to start tool 'callgrind'\n")


def test_start_up_cancels_out_of_the_difference_of_two_runs() -> None:
    startup, each = 3_000_000_000, 1_200_000
    small = (100, startup + 100 * each)
    large = (300, startup + 300 * each)
    assert per_reply(small, large) == each
    with pytest.raises(ValueError, match="more replies"):
        per_reply(large, small)


async def test_the_server_count_drives_checked_replies_over_real_sockets() -> None:
    """`bench.server_instructions` fetches its replies from a real server (here the floor, not
    under valgrind) over keep-alive connections, and every reply is checked."""
    floor = next(spec for spec in SPECS if spec.name == "bare_asgi")
    with start(floor) as server:
        await server_instructions._drive(server.port, 7, 3)  # 3 + 2 + 2 replies, all whole


async def test_a_reply_that_goes_wrong_stops_the_server_count() -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(wrong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(RuntimeError, match="went wrong"):
            await server_instructions._drive(port, 1, 1)
