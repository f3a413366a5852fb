"""The browser's own EventSource against `GET /conversations/{id}/stream`, across instances.

Debian's Chromium (Playwright drives it) opens a plain `new EventSource(...)`
on a page of the proxy's origin. The proxy, a small TCP relay this test
controls, sends the first connection to instance A and later ones to B (both
on one Redis), and cuts the first stream in the middle of an event. Nothing in
the page reconnects: EventSource does, by itself, with `Last-Event-ID`, after
the server's `retry:`. After `completed` the server ends the stream,
EventSource reconnects once more, gets 204, and stops for good.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from browsersupport import browser, playwright  # noqa: F401 - fixtures used below
from livesupport import ServerProcess
from scalesupport import metric, read_then_cut

RETRY_MS = 200

PAGE_SCRIPT = """
cid => new Promise(resolve => {
  const log = window.log = {events: [], opens: 0, errors: 0};
  const source = window.source = new EventSource(`/conversations/${cid}/stream`);
  source.onopen = () => { log.opens += 1; };
  for (const type of ["connected", "message", "completed", "error"]) {
    source.addEventListener(type, e => {
      if (e.data === undefined) return;  // a connection error, not an `error` event
      log.events.push({type, id: e.lastEventId, data: JSON.parse(e.data)});
    });
  }
  source.onerror = () => {
    log.errors += 1;
    if (source.readyState === EventSource.CLOSED) resolve(log);
  };
})
"""


@dataclass
class Request:
    connection: int
    line: str
    last_event_id: str | None


class CuttingProxy:
    """A TCP relay: connection n goes to `upstreams[min(n, len - 1)]`; records every request.

    `cut_after`: the first connection is closed after the client got the frames of that
    many message events and the start of the next one, as a network failure would.
    """

    def __init__(self, upstreams: list[int], cut_after: int) -> None:
        self.upstreams = upstreams
        self.cut_after = cut_after
        self.requests: list[Request] = []
        self.cuts = 0
        self._lock = threading.Lock()
        self._connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                number, self._connections = self._connections, self._connections + 1
            threading.Thread(target=self._serve, args=(client, number), daemon=True).start()

    def _record(self, number: int, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        last_id = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "last-event-id":
                last_id = value.strip()
        with self._lock:
            self.requests.append(Request(number, lines[0], last_id))

    def _serve(self, client: socket.socket, number: int) -> None:
        port = self.upstreams[min(number, len(self.upstreams) - 1)]
        with client, socket.create_connection(("127.0.0.1", port)) as upstream:

            def relay_requests() -> None:
                pending = b""
                with contextlib.suppress(OSError):
                    while data := client.recv(65536):
                        pending += data
                        while b"\r\n\r\n" in pending:  # GETs only: no bodies to skip
                            head, _, pending = pending.partition(b"\r\n\r\n")
                            self._record(number, head)
                        upstream.sendall(data)
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)

            threading.Thread(target=relay_requests, daemon=True).start()
            seen = 0
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    if number == 0 and self.cut_after:
                        at = _nth(data, b"event: message", self.cut_after + 1 - seen)
                        seen += data.count(b"event: message")
                        if at is not None:
                            # The whole events arrive, then half an event and the failure. The
                            # pause keeps a loaded browser from getting the bytes and the close
                            # in one read, where it may drop the data with the error.
                            client.sendall(data[:at])
                            time.sleep(0.3)
                            client.sendall(data[at : at + 20])
                            self.cuts += 1
                            client.shutdown(socket.SHUT_RDWR)
                            return
                    client.sendall(data)


def _nth(data: bytes, needle: bytes, n: int) -> int | None:
    """Where the n-th `needle` starts in `data` (n >= 1), or None."""
    at = -1
    for _ in range(n):
        at = data.find(needle, at + 1)
        if at < 0:
            return None
    return at


@pytest.fixture
def page_at(browser: Browser) -> Iterator[Callable[[str], Page]]:  # noqa: F811 - the imported fixture
    """A blank page whose origin is `base_url` (served by Playwright, not the network)."""
    context = browser.new_context()

    def open_page(base_url: str) -> Page:
        page = context.new_page()
        page.route(
            base_url + "/blank",
            lambda route: route.fulfill(
                body="<!doctype html><title>es</title>", content_type="text/html"
            ),
        )
        page.goto(base_url + "/blank")
        return page

    yield open_page
    context.close()


def test_eventsource_reconnects_by_itself_across_instances_and_stops_at_204(
    instances: Callable[..., list[ServerProcess]], page_at: Callable[[str], Page]
) -> None:
    a, b = instances(TOKEN_DELAY="0.04", SSE_RETRY_MS=str(RETRY_MS))
    proxy = CuttingProxy([a.port, b.port], cut_after=6)
    try:
        # A reply in flight: its client left after the first chunk; the grace window holds it.
        started = read_then_cut("POST", a.url + "/chat", 1, data={"message": "Tell me a joke"})
        cid = started.conversation_id
        page = page_at(proxy.url)
        log: dict[str, Any] = page.evaluate(PAGE_SCRIPT, cid)
        time.sleep(4 * RETRY_MS / 1000)  # would it reconnect again? (it must not)
        requests = list(proxy.requests)
        closed = page.evaluate("window.source.readyState")
    finally:
        proxy.close()

    assert proxy.cuts == 1
    events = log["events"]
    ids = [e["id"] for e in events]
    reply_id = started.events[0].data["message_id"]
    assert ids == [f"{reply_id}:{n}" for n in range(len(events))]  # in order, none twice
    assert events[-1]["type"] == "completed"
    joined = "".join(e["data"]["content"] for e in events if e["type"] == "message")
    assert joined == events[-1]["data"]["content"]

    path = f"GET /conversations/{cid}/stream HTTP/1.1"
    assert [r.line for r in requests] == [path] * 3, requests
    first, resumed, final = requests
    assert first.last_event_id is None
    assert first.connection == 0
    # The cut came mid-event: the browser resumed after the last one it had whole.
    assert resumed.last_event_id == f"{reply_id}:6"
    assert resumed.connection > 0  # a new connection, to instance B
    assert final.last_event_id == ids[-1]  # -> 204: EventSource is CLOSED, no more requests
    assert log["opens"] == 2
    assert closed == 2
    # A served the first connection from memory, B the resume from the Redis log.
    assert metric(a.url, 'chatbot_sse_resumes_total{source="live"}') == 1
    assert metric(b.url, 'chatbot_sse_resumes_total{source="log"}') == 1
