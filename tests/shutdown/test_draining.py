"""SIGTERM: replies that can finish do; the rest are handed off with `reconnect`; /health 503."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from chatbot_sse.config import Settings
from chatbot_sse.main import create_app
from livesupport import ServerProcess, parse_sse
from shutdownsupport import RawStream, dechunk, resume


def test_sigterm_lets_short_replies_finish_and_hands_off_the_rest(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env = {"STORE_URL": f"sqlite:///{tmp_path}/shared.db", "TOKEN_DELAY": "0.02"}
    draining = start_server("gunicorn", WORKERS="2", DRAIN_SECONDS="2", SSE_RETRY_MS="1000", **env)
    other = start_server("uvicorn", **env)  # another instance on the same store

    slow = RawStream(draining, "/simulate slow")
    short = RawStream(draining, "Hello there")
    try:
        first = slow.until(b"event: message", 2)
        cid = first[0].data["conversation_id"]
        short.until(b"event: connected")
        started = time.monotonic()
        draining.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        short_events = short.to_end()
        events = slow.to_end()
        handed_off_after = time.monotonic() - started
    finally:
        slow.close()
        short.close()
    assert draining.proc.wait(20) == 0  # type: ignore[union-attr]

    assert short_events[-1].event == "completed"  # finished within the drain, as usual

    retry = parse_sse(dechunk(slow.raw))[2]
    assert events[-1].event == "reconnect", slow.raw[-400:]
    assert events[-1].id == events[-2].id  # no id of its own: Last-Event-ID stays put
    assert retry is not None
    assert 500 <= retry <= 1500
    assert 1.5 < handed_off_after < 10
    assert events[-2].event == "message"  # the generation's end is in the log, not on this wire
    last_id = events[-2].id

    rest = resume(other, cid, last_id)
    assert rest.status == 200
    assert rest.events[0].id == f"{first[0].data['message_id']}:{int(last_id.split(':')[1]) + 1}"
    assert rest.last.event == "error"
    assert rest.last.data["error"]["code"] == "shutdown"
    history = httpx.get(f"{other.url}/conversations/{cid}/history", timeout=10).json()
    reply = history["messages"][-1]
    assert reply["role"] == "assistant"
    assert reply["status"] == "interrupted"
    said = "".join(e.data["content"] for e in events + rest.events if e.event == "message")
    assert reply["content"] == said


async def test_health_says_503_draining_while_draining(tmp_path: Path) -> None:
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/chat.db"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health")).status_code == 200
            app.state.replies.drain(handoff_after=60)
            response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "draining"


def test_sigterm_lets_a_reply_whose_client_left_run_to_its_end(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The server's last connection closed, but the reply is not over: its client may resume
    elsewhere, so it is not cut at once; the process exits when it is done."""
    store = {"STORE_URL": f"sqlite:///{tmp_path}/shared.db"}
    server = start_server(TOKEN_DELAY="0.05", DRAIN_SECONDS="10", **store)
    stream = RawStream(server, "nice")  # 20 chunks, about a second
    first = stream.until(b"event: message", 2)
    stream.close()
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    server.proc.wait(20)  # type: ignore[union-attr]  # uvicorn re-raises SIGTERM: -15
    assert time.monotonic() - started < 8  # when the reply ended, not at the handoff (10 s)

    later = start_server(**store)
    cid = first[0].data["conversation_id"]
    reply = httpx.get(f"{later.url}/conversations/{cid}/history").json()["messages"][-1]
    assert reply["status"] == "complete", reply
    replayed = resume(later, cid, first[-1].id)
    assert replayed.last.event == "completed"
    assert replayed.last.data["content"] == reply["content"]
