"""Two instances on one Redis behave as one service: turns, resume and cancel across them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx

from livesupport import Event, ServerProcess, parse_sse, post_chat
from scalesupport import assert_exact_reply, history, metric, read_then_cut, wait_for_history


def test_turns_alternate_between_instances(instances: Callable[..., list[ServerProcess]]) -> None:
    """Each turn goes to the other instance; both see the whole conversation, in order."""
    a, b = instances(TOKEN_DELAY="0")
    said = ["My name is Ada Lovelace", "I like chess", "What is my name?", "What do I like?"]
    cid: str | None = None
    replies: list[str] = []
    for turn, text in enumerate(said):
        server = (a, b)[turn % 2]
        data = {"message": text, **({"conversation_id": cid} if cid else {})}
        stream = post_chat(server.url, data=data)
        assert stream.status == 200
        assert_exact_reply(stream.events)
        cid = stream.events[0].data["conversation_id"]
        replies.append(stream.last.data["content"])
    assert cid is not None
    # Context crossed instances: B answered from what was said to A, and the other way round.
    assert "Ada" in replies[2]
    assert "chess" in replies[3]
    expected = [
        (role, content) for pair in zip(said, replies, strict=True) for role, content in
        zip(("user", "assistant"), pair, strict=True)
    ]  # fmt: skip
    for server in (a, b):
        messages = history(server.url, cid)
        assert [(m["role"], m["content"]) for m in messages] == expected
        assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
        assert all(m["status"] == "complete" for m in messages if m["role"] == "assistant")


def test_a_stream_cut_on_one_instance_resumes_exactly_on_the_other(
    instances: Callable[..., list[ServerProcess]],
) -> None:
    a, b = instances(TOKEN_DELAY="0.03")
    first = read_then_cut("POST", a.url + "/chat", 4, data={"message": "What is Redis?"})
    cid = first.conversation_id
    time.sleep(0.2)  # away for a moment: A keeps generating into Redis meanwhile
    with httpx.stream(
        "GET",
        f"{b.url}/conversations/{cid}/stream",
        headers={"Last-Event-ID": first.last_id},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-accel-buffering"] == "no"
        raw = response.read()
    rest, _, retry = parse_sse(raw)
    assert retry == 3000
    assert rest[0].id is not None
    assert int(rest[0].id.rsplit(":", 1)[1]) == int(first.last_id.rsplit(":", 1)[1]) + 1
    whole = assert_exact_reply(first.events + rest)
    stored = wait_for_history(b.url, cid, 2)
    assert stored[1]["content"] == whole
    assert stored[1]["status"] == "complete"
    assert metric(b.url, 'chatbot_sse_resumes_total{source="log"}') == 1
    assert metric(b.url, "chatbot_sse_replayed_events_total") >= 1
    # A second resume from the very end, on A this time: nothing left, so 204 (EventSource stops).
    end = httpx.get(
        f"{a.url}/conversations/{cid}/stream", headers={"Last-Event-ID": rest[-1].id or ""}
    )
    assert end.status_code == 204


def test_several_readers_on_both_instances_get_the_same_reply(
    instances: Callable[..., list[ServerProcess]],
) -> None:
    """Followers on A (from memory) and on B (from Redis) see the same events, live."""
    a, b = instances(TOKEN_DELAY="0.03")
    first = read_then_cut("POST", a.url + "/chat", 1, data={"message": "Tell me a joke"})
    cid = first.conversation_id
    results: dict[str, list[str | None]] = {}

    def follow(name: str, server: ServerProcess) -> None:
        raw = httpx.get(f"{server.url}/conversations/{cid}/stream", timeout=30).content
        results[name] = [e.id for e in parse_sse(raw)[0]]

    threads = [
        threading.Thread(target=follow, args=(name, server))
        for name, server in (("a", a), ("b1", b), ("b2", b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results["a"] == results["b1"] == results["b2"]
    assert results["a"][0] == f"{first.events[0].data['message_id']}:0"


def test_cancel_through_one_instance_stops_the_other(
    instances: Callable[..., list[ServerProcess]],
) -> None:
    a, b = instances(TOKEN_DELAY="0.05")
    raw = b""
    with httpx.stream("POST", a.url + "/chat", data={"message": "Tell me a story"}) as response:
        chunks = response.iter_raw()
        while b"event: message" not in raw:
            raw += next(chunks)
        cid = parse_sse(raw[: raw.index(b"\n\n") + 2])[0][0].data["conversation_id"]
        cancelled_at = time.monotonic()
        answer = httpx.post(f"{b.url}/conversations/{cid}/cancel")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "cancelling"
        for chunk in chunks:
            raw += chunk
        ended_after = time.monotonic() - cancelled_at
    events = parse_sse(raw)[0]
    assert ended_after < 2  # A polls the cancel flag every 0.5 s
    assert events[-1].event == "error"
    assert events[-1].data["error"]["code"] == "cancelled"
    reply = wait_for_history(b.url, cid, 2)[1]
    assert reply["status"] == "interrupted"
    assert reply["meta"]["finish_reason"] == "cancelled"
    assert reply["content"] == "".join(e.data["content"] for e in events if e.event == "message")
    assert metric(a.url, 'chatbot_sse_generations_cancelled_total{reason="cancelled"}') == 1
    assert httpx.post(f"{b.url}/conversations/{cid}/cancel").json()["status"] == "finished"


def test_hundreds_of_replies_at_once_on_redis_and_a_cancel_among_them(
    instances: Callable[..., list[ServerProcess]],
) -> None:
    """200 concurrent chats on one instance: every one is stored and streamed (each call to
    Redis needs a connection: redis-py 8's pool refused the 101st), and a cancel through the
    other instance still reaches one of them (the controls of all 200 are read in one go)."""
    a, b = instances(TOKEN_DELAY="0.03")  # "Tell me a story": 160 chunks, 4.8 s
    count = 200
    # The cancelled one is slow (10x the delay): it is still going whenever the cancel comes,
    # however long this machine takes to start all 200.
    messages = ["Tell me a story"] * (count - 1) + ["/simulate slow"]

    async def chat(
        client: httpx.AsyncClient, message: str, started: asyncio.Queue[tuple[str, str]]
    ) -> list[Event]:
        raw = b""
        async with client.stream("POST", "/chat", data={"message": message}) as reply:
            if reply.status_code != 200:
                body = (await reply.aread())[:300]
                started.put_nowait((message, f"status {reply.status_code}: {body!r}"))
            async for chunk in reply.aiter_raw():
                if not raw and chunk:
                    started.put_nowait((message, chunk.decode()))
                raw += chunk
        return parse_sse(raw)[0]

    async def run() -> tuple[list[list[Event]], str]:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=a.url, timeout=60, limits=limits) as client:
            started: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
            replies = [asyncio.ensure_future(chat(client, m, started)) for m in messages]
            slow = ""
            for _ in range(count):
                message, first = await asyncio.wait_for(started.get(), 30)
                assert not first.startswith("status "), first
                if message == messages[-1]:
                    slow = first
            connected = parse_sse(slow[: slow.index("\n\n") + 2].encode())[0][0]
            cid = str(connected.data["conversation_id"])
            async with httpx.AsyncClient(base_url=b.url) as other:
                answer = await other.post(f"/conversations/{cid}/cancel")
            assert answer.json()["status"] == "cancelling", answer.text
            return list(await asyncio.gather(*replies)), cid

    streams, cancelled = asyncio.run(run())
    ends = [(str(s[0].data["conversation_id"]), s[-1].event) for s in streams]
    assert sorted(end for cid, end in ends if cid != cancelled) == ["completed"] * (count - 1)
    assert [end for cid, end in ends if cid == cancelled] == ["error"]
    assert "store_unavailable" not in a.log()
    assert metric(a.url, 'chatbot_sse_generations_cancelled_total{reason="cancelled"}') == 1
