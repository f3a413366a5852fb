"""Production shape: gunicorn with several uvicorn workers sharing one SQLite file."""

from __future__ import annotations

import concurrent.futures
import json
import re
from collections.abc import Callable

import httpx

from livesupport import ServerProcess, Stream


def test_conversations_alternate_between_workers(
    start_server: Callable[..., ServerProcess], chat: Callable[..., Stream]
) -> None:
    server = start_server("gunicorn", WORKERS="5", TOKEN_DELAY="0.002")

    def conversation(index: int) -> tuple[str, list[str]]:
        # A new connection per turn, so the kernel spreads turns over the workers.
        first = chat(server.url, data={"message": f"Hello, my name is User{index}"})
        cid = first.events[0].data["conversation_id"]
        replies = [first.last.data["content"]]
        for _ in range(3):
            stream = chat(server.url, data={"message": "What is my name?", "conversation_id": cid})
            assert stream.last.event == "completed", stream.raw[-300:]
            assert f"User{index}" in stream.last.data["content"]
            replies.append(stream.last.data["content"])
        return cid, replies

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(conversation, range(16)))

    for cid, replies in results:
        messages = httpx.get(f"{server.url}/conversations/{cid}/history").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 4
        assert [m["content"] for m in messages if m["role"] == "assistant"] == replies

    # Metrics are aggregated over every worker, whichever one answers the scrape.
    for _ in range(3):
        text = httpx.get(server.url + "/metrics").text
        match = re.search(r'chatbot_sse_streams_total\{outcome="completed"\} (\S+)', text)
        assert match is not None
        assert float(match.group(1)) == 16 * 4
    log = server.log()
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", log))) == 5
    assert "Traceback" not in log
    # Turns of one conversation really were served by different workers. The kernel picks
    # the worker of each connection; on a loaded machine one may take a long run of them,
    # so a few more turns are sent until a second worker shows up (bounded).
    workers = workers_by_conversation(server)
    assert set(workers) == {cid for cid, _ in results}
    cid = results[0][0]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for _ in range(10):
            if any(len(pids) > 1 for pids in workers.values()):
                break
            turns = [{"message": "again", "conversation_id": cid}] * 6
            list(pool.map(lambda data: chat(server.url, data=data), turns))
            workers = workers_by_conversation(server)
    assert any(len(pids) > 1 for pids in workers.values())


def workers_by_conversation(server: ServerProcess) -> dict[str, set[int]]:
    """The pids of the workers that finished each conversation's turns, from the JSON log."""
    workers: dict[str, set[int]] = {}
    for line in server.log().splitlines():
        if '"turn_finished"' in line:
            record = json.loads(line)
            workers.setdefault(record["conversation_id"], set()).add(record["pid"])
    return workers
