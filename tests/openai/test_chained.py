"""Two instances chained: the front one's engine is the back one's `/v1` (ENGINE=openai)."""

from __future__ import annotations

from pathlib import Path

import httpx
from support import history, live_server, metric

from livesupport import post_chat


def test_front_stores_what_the_back_generated(tmp_path: Path) -> None:
    back = live_server(tmp_path, "back")
    try:
        front = live_server(tmp_path, "front", ENGINE="openai", OPENAI_BASE_URL=back.url + "/v1")
        try:
            health = httpx.get(front.url + "/health").json()
            assert health["engine"]["name"] == "openai"
            assert health["engine"]["status"] == "ok"
            cid = None
            said = ["Hello, my name is Ada and I love chess.", "What is 6 * 7?", "What's my name?"]
            for text in said:
                data = {"message": text, **({"conversation_id": cid} if cid else {})}
                stream = post_chat(front.url, data=data)
                assert stream.last.event == "completed", stream.raw
                cid = stream.last.data["conversation_id"]
                stored = history(front, cid)
                # Ask the back for its reply to the same context, through its own /v1.
                context = [{"role": m["role"], "content": m["content"]} for m in stored[:-1]]
                back_reply = httpx.post(
                    back.url + "/v1/chat/completions", json={"model": "m", "messages": context}
                ).json()
                reply = back_reply["choices"][0]["message"]["content"]
                assert stored[-1]["content"] == reply == stream.last.data["content"]
                assert stored[-1]["status"] == "complete"
                # The usage is the back's count, passed through, not the front's estimate.
                assert stream.last.data["usage"] == back_reply["usage"]
                chunks = "".join(e.data["content"] for e in stream.of("message"))
                assert chunks == reply
            assert cid is not None
            final = history(front, cid)
            assert [m["role"] for m in final] == ["user", "assistant"] * 3
            assert "42" in str(final[3]["content"])
            assert "Ada" in str(final[5]["content"])  # the context travelled upstream
            assert metric(front, 'chatbot_sse_upstream_requests_total{outcome="ok"}') == 3
            assert metric(back, 'chatbot_sse_streams_total{outcome="completed"}') == 6
        finally:
            front.stop()
    finally:
        back.stop()
