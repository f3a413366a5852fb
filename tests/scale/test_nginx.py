"""Through a real nginx running `deploy/nginx.conf`: events arrive as sent, resume works.

nginx buffers proxied responses by default (`proxy_buffering on`), and the
deployed config leaves it so: the app's own `X-Accel-Buffering: no` turns it
off per stream. (Measured with nginx 1.22: a fast client got events on time
even with nginx told to ignore that header; what buffering changes is that
nginx reads a reply ahead of a slow client, spooling it to disk, instead of
letting the app see the back-pressure. The test holds the arrival times to
account either way, so a config change that lumps the stream fails it.)
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from livesupport import ServerProcess, parse_sse
from scalesupport import (
    DEPLOY,
    Nginx,
    Timed,
    assert_exact_reply,
    metric,
    read_then_cut,
    read_timed,
    wait_for_history,
)

TOKEN_DELAY = 0.05
MESSAGE = "Tell me a joke"  # about 30 chunks: 1.5 s at TOKEN_DELAY


def spread(timed: Timed) -> tuple[float, float]:
    """(seconds from the first message event to `completed`, the time generation took)."""
    first = next(i for i, e in enumerate(timed.events) if e.event == "message")
    chunks = sum(1 for e in timed.events if e.event == "message")
    return timed.arrivals[-1] - timed.arrivals[first], (chunks - 1) * TOKEN_DELAY


def test_the_deployed_config_keeps_nginx_default_buffering() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    directives = [line.split("#")[0].strip() for line in text.splitlines()]
    assert not [d for d in directives if d.startswith(("proxy_buffering", "proxy_ignore_headers"))]
    assert "proxy_http_version 1.1;" in directives
    assert 'proxy_set_header Connection "";' in directives


def test_each_event_arrives_when_it_is_sent(
    instances: Callable[..., list[ServerProcess]],
    nginx: Callable[[list[ServerProcess]], Nginx],
) -> None:
    a, b = instances(TOKEN_DELAY=str(TOKEN_DELAY))
    proxy = nginx([a, b])
    timed = read_timed("POST", proxy.url + "/chat", data={"message": MESSAGE})
    assert timed.status == 200
    assert timed.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in timed.headers
    assert "x-accel-buffering" not in timed.headers  # nginx acts on it and drops it
    assert_exact_reply(timed.events)
    took, generated = spread(timed)
    assert generated > 1.0
    # The first chunk arrived long before the last: the reply streamed through nginx.
    assert took > 0.7 * generated, (took, generated)
    assert len(set(timed.arrivals)) > len(timed.events) // 2  # not in a few lumps
    # JSON answers pass through unchanged, errors included.
    history = httpx.get(f"{proxy.url}/conversations/{'f' * 32}/history")
    assert history.status_code == 404
    assert history.json()["error"]["code"] == "conversation_not_found"
    assert httpx.get(proxy.url + "/metrics").status_code == 404  # scrape instances directly
    health = httpx.get(proxy.url + "/health")
    assert health.status_code == 200
    assert len(health.headers["x-request-id"]) == 32  # nginx's $request_id, taken up by the app


def test_resume_through_nginx(
    instances: Callable[..., list[ServerProcess]],
    nginx: Callable[[list[ServerProcess]], Nginx],
) -> None:
    a, b = instances(TOKEN_DELAY="0.03")
    proxy = nginx([a, b])
    first = read_then_cut("POST", proxy.url + "/chat", 3, data={"message": "What is Redis?"})
    cid = first.conversation_id
    url = f"{proxy.url}/conversations/{cid}/stream"
    with httpx.stream("GET", url, headers={"Last-Event-ID": first.last_id}, timeout=30) as response:
        assert response.status_code == 200
        rest = parse_sse(response.read())[0]
    whole = assert_exact_reply(first.events + rest)
    assert wait_for_history(proxy.url, cid, 2)[1]["content"] == whole
    resumes = [metric(s.url, 'chatbot_sse_resumes_total{source="live"}') for s in (a, b)]
    resumes += [metric(s.url, 'chatbot_sse_resumes_total{source="log"}') for s in (a, b)]
    assert sum(resumes) == 1
    # At the end, 204 through nginx too: a browser's EventSource stops there.
    end = httpx.get(url, headers={"Last-Event-ID": rest[-1].id or ""})
    assert end.status_code == 204
    assert any(" 204 " in line for line in proxy.access_log())
