"""The web chat page in real headless Chromium against a live server.

What a person does on the page, end to end: chat over several turns, watch a reply stream
in, stop it, reload, use two tabs, meet errors, switch themes, use a phone-sized screen.
Hostile text goes in as a message and comes back as a bot reply, and must never run.
Where the server cannot yet produce a situation (a connection dropped mid-reply), the
network is shaped with Playwright's routing, at the HTTP boundary, never inside the page.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
from playwright.sync_api import Browser, BrowserContext, Route, expect

from chatbot_sse.domain import Message, Role, new_conversation_id, new_message_id
from chatbot_sse.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tests.e2e.conftest import ChatPage, CuttingProxy

    OpenTab = Callable[[BrowserContext], ChatPage]

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    '<svg onload="alert(1)"></svg><iframe src="javascript:alert(1)"></iframe>',
]
INJECTED = "#messages img, #messages script, #messages svg, #messages iframe, #messages object"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def sse(events: list[tuple[str, str, dict[str, Any]]], retry: int | None = None) -> str:
    """An SSE body from (event, id, data) triples, as the server writes it."""
    head = f"retry: {retry}\n\n" if retry is not None else ""
    return head + "".join(
        f"event: {name}\nid: {eid}\ndata: {json.dumps({'type': name, **data})}\n\n"
        for name, eid, data in events
    )


# ---- serving ---------------------------------------------------------------------------


def test_page_is_served_with_a_strict_csp(web_server: str) -> None:
    status, headers, body = get(web_server + "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "'unsafe-inline'" not in csp
    assert "object-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    page = body.decode()
    assert "<script>" not in page  # every script is a file
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    assert "http://" not in page  # nothing from outside
    assert "https://" not in page

    status, headers, _ = get(web_server + "/static/app.js")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert headers["x-content-type-options"] == "nosniff"
    assert get(web_server + "/static/app.js", {"If-None-Match": headers["etag"]})[0] == 304
    assert get(web_server + "/static/nothing.js")[0] == 404
    assert get(web_server + "/static/..%2F..%2Fconfig.py")[0] == 404


# ---- chatting --------------------------------------------------------------------------


def test_second_reply_uses_the_first_turns_context(tab: ChatPage) -> None:
    tab.chat("Hello, my name is Ada")
    assert "Ada" in tab.chat("What is my name?")
    assert [role for role, _ in tab.transcript()] == ["user", "assistant"] * 2
    current = tab.page.locator(".conversation-open[aria-current=page]")
    expect(current).to_contain_text("Hello, my name is Ada")
    expect(tab.page.locator("#chat-title")).to_have_text("Hello, my name is Ada")


def test_reply_grows_while_it_streams(tab: ChatPage) -> None:
    # Record the reply's text after every DOM change, in the page, as it happens.
    tab.page.evaluate(
        """() => {
          window.__states = [];
          new MutationObserver(() => {
            const reply = document.querySelector('#messages > li.message-assistant:last-child');
            if (!reply) return;
            const text = reply.querySelector('.message-body')?.textContent ?? '';
            const busy = reply.getAttribute('aria-busy');
            window.__states.push([text.length, reply.dataset.state, busy]);
          }).observe(document.getElementById('messages'),
                     {childList: true, subtree: true, characterData: true, attributes: true});
        }"""
    )
    final = tab.chat("Tell me a joke")
    states: list[list[Any]] = tab.page.evaluate("window.__states")
    streaming = [length for length, state, busy in states if state == "streaming" and busy]
    intermediate = sorted({n for n in streaming if 0 < n < len(final)})
    assert len(intermediate) >= 3, f"saw only {intermediate} of {len(final)} characters"
    assert streaming[-1] >= intermediate[0]
    assert states[-1][1] == "done"
    assert states[-1][2] is None  # aria-busy dropped when the reply is whole


def test_stop_ends_the_reply_and_the_chat_goes_on(tab: ChatPage) -> None:
    cancels: list[str] = []
    tab.page.on("request", lambda r: cancels.append(r.url) if r.url.endswith("/cancel") else None)
    tab.send("/simulate slow")
    reply = tab.replies.first
    expect(reply.locator(".message-body")).to_have_text(re.compile(r"\w{2,}"))
    expect(tab.page.get_by_role("button", name="Stop the reply")).to_be_visible()
    tab.page.get_by_role("button", name="Stop the reply").click()
    expect(reply).to_have_attribute("data-state", "stopped")
    expect(reply.locator(".message-tag")).to_have_text("Stopped")
    shown = reply.inner_text()
    tab.page.wait_for_timeout(700)  # several chunk intervals of /simulate slow
    assert reply.inner_text() == shown
    expect(tab.page.get_by_role("button", name="Send message")).to_be_visible()
    expect(tab.page.locator("#connection")).to_have_attribute("data-state", "idle")
    conversation = tab.page.evaluate("sessionStorage['chatbot-sse:active']")
    assert cancels == [f"{tab.page.url}conversations/{conversation}/cancel"]

    # Esc stops too.
    tab.send("/simulate slow")
    expect(tab.replies.nth(1).locator(".message-body")).to_have_text(re.compile(r"\w{2,}"))
    tab.page.keyboard.press("Escape")
    tab.reply(2, "stopped")

    assert tab.chat("Hello there")
    assert len(tab.transcript()) == 6

    tab.page.reload()  # the server kept the stopped replies, marked as stopped
    tab.wait_ready()
    expect(tab.messages).to_have_count(6)
    for n in (1, 2):
        expect(tab.replies.nth(n - 1).locator(".message-tag")).to_have_text("Stopped")


async def write_conversation(path: Path, count: int) -> str:
    """A conversation of `count` messages ("message 0", ...), written into the live server's
    SQLite file as another process sharing it would."""
    store = SQLiteStore(path)
    await store.open()
    try:
        cid = new_conversation_id()
        await store.create_conversation(cid, time.time())
        for n in range(count):
            role = Role.USER if n % 2 == 0 else Role.ASSISTANT
            await store.append_message(
                Message(new_message_id(), cid, role, f"message {n}", time.time())
            )
    finally:
        await store.close()
    return cid


def test_a_long_conversation_opens_at_its_end_and_shows_earlier_messages_on_demand(
    tab: ChatPage, open_tab: OpenTab, web_store: Path
) -> None:
    with ThreadPoolExecutor(1) as writer:  # Playwright's own event loop runs in this thread
        cid = writer.submit(asyncio.run, write_conversation(web_store, 230)).result()
    tab.page.evaluate(f"sessionStorage.setItem('chatbot-sse:active', '{cid}')")
    tab.page.reload()
    tab.wait_ready()
    earlier = tab.page.get_by_role("button", name="Show earlier messages")
    expect(tab.messages).to_have_count(100)  # the newest page only
    assert tab.transcript()[-1] == ("assistant", "message 229")
    expect(earlier).to_be_visible()
    at_end = "t => t.scrollHeight - t.scrollTop - t.clientHeight < 2"
    assert tab.page.eval_on_selector("#transcript", at_end)

    first = tab.page.locator("#messages > li", has_text="message 130")
    expect(tab.messages.first).to_have_text(re.compile("message 130"))  # stays where it is:
    tab.page.eval_on_selector("#transcript", "t => { t.scrollTop = 0; }")  # read up to the top
    before = first.bounding_box()
    earlier.click()
    expect(tab.messages).to_have_count(200)
    after = first.bounding_box()
    assert before is not None
    assert after is not None
    assert abs(after["y"] - before["y"]) < 2, (before, after)
    earlier.click()
    expect(tab.messages).to_have_count(230)
    expect(earlier).to_be_hidden()  # nothing before the first message
    assert tab.transcript() == [
        ("user" if n % 2 == 0 else "assistant", f"message {n}") for n in range(230)
    ]
    assert "Ada" not in tab.chat("What is my name?")  # the conversation goes on
    expect(tab.messages).to_have_count(232)
    # Another tab writes to it: this one catches up and keeps the earlier pages it opened.
    other = open_tab(tab.page.context)
    other.page.evaluate(f"sessionStorage.setItem('chatbot-sse:active', '{cid}')")
    other.page.reload()
    other.wait_ready()
    expect(other.messages).to_have_count(100)
    other.chat("Hello again")
    expect(tab.messages).to_have_count(234)
    expect(earlier).to_be_hidden()
    assert tab.transcript()[0] == ("user", "message 0")


def test_reload_restores_the_conversation(tab: ChatPage) -> None:
    tab.chat("Hello, my name is Ada")
    tab.chat("Tell me a joke")
    before = tab.transcript()
    tab.page.reload()
    tab.wait_ready()
    expect(tab.messages).to_have_count(4)
    assert tab.transcript() == before
    expect(tab.page.locator("#welcome")).to_be_hidden()
    expect(tab.page.locator(".conversation")).to_have_count(1)
    assert "Ada" in tab.chat("What is my name?")  # the same conversation goes on

    tab.page.get_by_role("button", name="New chat").click()
    expect(tab.messages).to_have_count(0)
    tab.page.reload()
    tab.wait_ready()
    expect(tab.messages).to_have_count(0)  # a reload keeps the new, empty chat
    tab.page.locator(".conversation-open").first.click()
    expect(tab.messages).to_have_count(6)


def test_reload_mid_reply_follows_the_reply(tab: ChatPage, web_server: str) -> None:
    skip_unless_resumable(web_server)
    tab.chat("Hello, my name is Ada")
    tab.send("What can you do?")
    expect(tab.replies.nth(1).locator(".message-body")).to_have_text(re.compile(r"\w+ \w+"))
    tab.page.reload()  # the reply is not stored yet: the page follows it from the server
    tab.page.wait_for_selector("html[data-ready]", state="attached")
    expect(tab.replies.nth(1)).to_have_attribute("data-state", "streaming")
    expect(tab.page.locator("#connection")).to_have_attribute("data-state", "streaming")
    followed = tab.reply(2).locator(".message-body").inner_text()
    tab.page.reload()
    tab.wait_ready()
    expect(tab.messages).to_have_count(4)
    assert tab.transcript()[3] == ("assistant", followed)


def test_two_tabs_keep_their_own_conversations(context: BrowserContext, open_tab: OpenTab) -> None:
    ada = open_tab(context)
    grace = open_tab(context)
    ada.send("Hello, my name is Ada")
    grace.send("Hello, my name is Grace")  # both stream at once
    ada.reply(1)
    grace.reply(1)

    for tab in (ada, grace):  # each tab's write merged, none overwritten
        expect(tab.page.locator(".conversation")).to_have_count(2)
    expect(ada.page.locator("[aria-current=page]")).to_contain_text("Ada")
    expect(grace.page.locator("[aria-current=page]")).to_contain_text("Grace")

    ada.page.reload()
    ada.wait_ready()
    assert "Ada" in ada.chat("What is my name?")
    assert "Grace" in grace.chat("What is my name?")
    expect(ada.page.locator(".conversation")).to_have_count(2)

    # A tab showing the same conversation follows the other tab's turns.
    grace.page.locator(".conversation-open", has_text="Ada").click()
    expect(grace.messages).to_have_count(4)
    ada.chat("Tell me a joke")
    expect(grace.messages).to_have_count(6)
    expect(grace.replies.last).to_have_attribute("data-state", "done")
    assert grace.transcript() == ada.transcript()


def test_a_second_tab_follows_the_reply_live_and_a_message_there_replaces_it(
    context: BrowserContext, open_tab: OpenTab
) -> None:
    ada = open_tab(context)
    ada.chat("Hello, my name is Ada")
    other = open_tab(context)
    other.page.locator(".conversation-open", has_text="Ada").click()
    expect(other.messages).to_have_count(2)

    ada.send("/simulate slow")
    followed = other.replies.nth(1)  # the other tab shows the reply as it streams
    expect(followed).to_have_attribute("data-state", "streaming")
    expect(followed.locator(".message-body")).to_have_text(re.compile(r"\w+ \w+ \w+"))
    expect(other.page.locator("#send")).to_be_visible()  # and may still send
    expect(other.page.locator("#stop")).to_be_visible()

    other.send("What is my name?")  # replaces the reply still coming, as the server does
    assert "Ada" in other.reply(3).locator(".message-body").inner_text()
    replaced = "Replaced by a newer message"
    expect(ada.replies.nth(1).locator(".message-tag")).to_have_text(replaced)
    # The first tab catches up with the turn that replaced its reply; both tabs end showing
    # what the server stored, the replaced reply with what it had said.
    expect(ada.messages).to_have_count(6)
    expect(ada.replies.last).to_have_attribute("data-state", "done")
    expect(other.replies.nth(1)).to_have_attribute("data-state", "superseded")
    expect(other.replies.nth(1).locator(".message-tag")).to_have_text(replaced)
    assert ada.replies.nth(1).locator(".message-body").inner_text().strip()
    expect(other.page.locator("#connection")).to_have_attribute("data-state", "idle")
    assert ada.transcript() == other.transcript()
    expect(ada.page.locator("#send")).to_be_visible()
    expect(ada.page.locator("#stop")).to_be_hidden()


def test_deleting_a_conversation_asks_then_deletes_it_on_the_server(
    context: BrowserContext, open_tab: OpenTab, web_server: str
) -> None:
    ada = open_tab(context)
    ada.chat("Hello, my name is Ada")
    cid = ada.page.evaluate("sessionStorage.getItem('chatbot-sse:active')")
    other = open_tab(context)
    other.page.locator(".conversation-open", has_text="Ada").click()
    expect(other.messages).to_have_count(2)
    history = f"{web_server}/conversations/{cid}/history"

    delete = ada.page.get_by_role("button", name="Delete “Hello, my name is Ada”")
    dialog = ada.page.locator("#delete-dialog")
    delete.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("“Hello, my name is Ada” and all its messages")
    dialog.get_by_role("button", name="Cancel").click()  # changed their mind
    expect(dialog).to_be_hidden()
    expect(ada.messages).to_have_count(2)
    assert get(history)[0] == 200

    def refuse(route: Route) -> None:
        if route.request.method != "DELETE":
            route.continue_()
            return
        body = {"error": {"code": "store_unavailable", "message": "The store is down."}}
        route.fulfill(status=503, content_type="application/json", body=json.dumps(body))

    ada.page.route("**/conversations/*", refuse)
    delete.click()
    dialog.get_by_role("button", name="Delete").click()
    notice = ada.page.locator("#notice")
    expect(notice).to_contain_text("Couldn't delete “Hello, my name is Ada”. The store is down.")
    expect(ada.page.locator(".conversation")).to_have_count(1)  # kept: it is still there
    ada.page.unroute("**/conversations/*", refuse)
    notice.get_by_role("button", name="Try again").click()  # asks again
    dialog.get_by_role("button", name="Delete").click()

    expect(ada.page.locator(".conversation")).to_have_count(0)
    expect(ada.messages).to_have_count(0)
    expect(ada.page.locator("#welcome")).to_be_visible()
    assert get(history)[0] == 404
    # Another tab showing it closes it and says why.
    expect(other.page.locator(".conversation")).to_have_count(0)
    expect(other.messages).to_have_count(0)
    expect(other.page.locator("#notice")).to_contain_text("This conversation was deleted")


# ---- safety ----------------------------------------------------------------------------


def test_html_in_messages_never_runs(tab: ChatPage) -> None:
    for text in HOSTILE:
        tab.chat(text)
    users = [text for role, text in tab.transcript() if role == "user"]
    assert users[: len(HOSTILE)] == HOSTILE  # shown as the text it is
    assert tab.page.locator(INJECTED).count() == 0

    tab.page.reload()  # the history path renders the same text safely
    tab.wait_ready()
    expect(tab.messages).to_have_count(2 * len(HOSTILE))
    assert tab.page.locator(INJECTED).count() == 0
    tab.page.wait_for_timeout(300)
    assert tab.dialogs == []


def test_html_in_a_bot_reply_never_runs(tab: ChatPage) -> None:
    hostile = "Look: <img src=x onerror=alert(1)> and <script>alert(2)</script> **bold**"
    chunks = [hostile[:9], hostile[9:30], hostile[30:]]
    ids = {"conversation_id": "f" * 32, "message_id": "m1"}
    events = [("connected", "m1:0", ids)]
    events += [("message", f"m1:{i}", {**ids, "content": c}) for i, c in enumerate(chunks, 1)]
    events += [("completed", "m1:4", {**ids, "content": hostile})]

    def reply(route: Route) -> None:
        route.fulfill(status=200, content_type="text/event-stream", body=sse(events, 3000))

    tab.page.route("**/chat", reply)
    body = tab.chat("Say something nasty").replace("\n", " ")
    assert "<img src=x onerror=alert(1)>" in body
    assert "<script>alert(2)</script>" in body
    assert tab.page.locator(INJECTED).count() == 0
    expect(tab.replies.first.locator("strong")).to_have_text("bold")
    tab.page.wait_for_timeout(300)
    assert tab.dialogs == []


MARKDOWN_CASES: list[tuple[str, list[str], str]] = [
    # (source, tags expected in order of appearance, text content)
    ("<img src=x onerror=alert(1)>", ["p"], "<img src=x onerror=alert(1)>"),
    ("**<script>alert(1)</script>**", ["p", "strong"], "<script>alert(1)</script>"),
    ("[click](javascript:alert(1))", ["p", "span"], "click"),
    ("[x](data:text/html;base64,PHNjcmlwdD4=)", ["p", "span"], "x"),
    (
        "[x](data:text/html,<script>alert(1)</script>)",
        ["p"],
        "[x](data:text/html,<script>alert(1)</script>)",
    ),
    ("![pic](https://example.com/x.png)", ["p", "a"], "!pic"),
    ('<a href="javascript:alert(1)">x</a>', ["p"], '<a href="javascript:alert(1)">x</a>'),
    ("```html\n<script>alert(1)</script>\n```", ["pre", "code"], "<script>alert(1)</script>"),
    ("`<svg onload=alert(1)>`", ["p", "code"], "<svg onload=alert(1)>"),
    ("- one\n- *two*\n\n1. a\n2. b", ["ul", "li", "li", "em", "ol", "li", "li"], "onetwoab"),
    ("Read https://example.com/<img src=x>.", ["p", "a"], "Read https://example.com/<img src=x>."),
    ("a_b_c and 2 * 3 * 4", ["p"], "a_b_c and 2 * 3 * 4"),
    ("# Title\nline one\nline two", ["h3", "p", "br"], "Titleline oneline two"),
    ("```\nunclosed fence", ["pre", "code"], "unclosed fence"),
]


def test_markdown_renderer_is_safe(tab: ChatPage) -> None:
    results: list[dict[str, Any]] = tab.page.evaluate(
        """async (cases) => {
          const { renderMarkdown } = await import('/static/markdown.js');
          const out = [];
          for (const source of cases) {
            const holder = document.createElement('div');
            holder.className = 'markdown';
            holder.append(renderMarkdown(source));
            document.body.append(holder);  // attached, so anything injected would load or run
            const all = [...holder.querySelectorAll('*')];
            out.push({
              tags: all.map(e => e.tagName.toLowerCase()),
              text: holder.textContent,
              attrs: all.flatMap(e => [...e.attributes].map(a => a.name)),
              links: [...holder.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel]),
            });
          }
          await new Promise(resolve => setTimeout(resolve, 300));
          return out;
        }""",
        [source for source, _, _ in MARKDOWN_CASES],
    )
    for (source, tags, text), got in zip(MARKDOWN_CASES, results, strict=True):
        assert got["tags"] == tags, source
        assert got["text"] == text, source
        assert set(got["attrs"]) <= {"href", "rel", "target", "class", "data-lang", "start"}
        for href, rel in got["links"]:
            assert href.startswith("https://"), source
            assert "noopener" in rel
    assert tab.dialogs == []


def test_sse_parser_follows_the_spec(tab: ChatPage) -> None:
    stream = (
        "\ufeffretry: 1500\r\n: ping\r\nevent: message\r\nid: a:1\r\ndata: line one\r\n"
        'data:line two\r\ndata\r\n\r\nid: bad\u0000id\ndata: {"x": 1}\n\nretry: soon\n'
        "event: custom\rdata:  spaced\r\r: only a comment\n\ndata: never finished"
    )
    expected = [
        {"type": "message", "data": "line one\nline two\n", "lastEventId": "a:1"},
        {"type": "message", "data": '{"x": 1}', "lastEventId": "a:1"},
        {"type": "custom", "data": " spaced", "lastEventId": "a:1"},
    ]
    runs: list[dict[str, Any]] = tab.page.evaluate(
        """async (stream) => {
          const { SseParser } = await import('/static/sse.js');
          const parse = (chunks) => {
            const got = {events: [], comments: [], retries: []};
            const parser = new SseParser({
              onEvent: e => got.events.push(e),
              onComment: c => got.comments.push(c),
              onRetry: ms => got.retries.push(ms),
            });
            for (const chunk of chunks) parser.feed(chunk);
            return got;
          };
          const runs = [parse([stream]), parse([...stream])];
          for (let i = 1; i < stream.length; i++) {
            runs.push(parse([stream.slice(0, i), stream.slice(i)]));
          }
          return runs;
        }""",
        stream,
    )
    for run in runs:  # however the bytes are cut, the same events come out
        assert run["events"] == expected
        assert run["comments"] == ["ping", "only a comment"]
        assert run["retries"] == [1500]


# ---- errors ----------------------------------------------------------------------------


def test_engine_failure_shows_a_readable_error_with_retry(tab: ChatPage) -> None:
    tab.send("/simulate error")
    reply = tab.reply(1, "error")
    error = reply.locator(".message-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    message = error.locator("p").inner_text()
    assert len(message) > 10
    assert "{" not in message
    assert "Traceback" not in message
    retry = reply.get_by_role("button", name="Retry this message")
    expect(retry).to_be_visible()
    retry.click()  # sends the message again, in place of the failed pair
    tab.reply(1, "error")
    expect(tab.messages).to_have_count(2)
    assert tab.chat("Hello")  # the conversation is still usable


def test_rejected_message_says_why_and_gives_the_text_back(tab: ChatPage) -> None:
    too_long = "x" * 10_001
    tab.send(too_long)
    reply = tab.reply(1, "error")
    message = reply.locator(".message-error p").inner_text()
    assert message
    assert "{" not in message
    expect(reply.get_by_role("button", name="Retry this message")).to_have_count(0)
    assert tab.page.get_by_label("Message", exact=True).input_value() == too_long
    expect(tab.page.locator("#connection")).to_have_attribute("data-state", "idle")
    assert tab.page.locator(".conversation").count() == 0  # nothing was created


def test_conversation_unknown_to_the_server_is_dropped_with_a_notice(tab: ChatPage) -> None:
    gone = "d" * 32  # say the server's database was reset since
    tab.page.evaluate(
        """(id) => {
          const items = {[id]: {id, title: 'An old chat', updatedAt: Date.now()}};
          localStorage.setItem('chatbot-sse:conversations:v1', JSON.stringify({items}));
          sessionStorage.setItem('chatbot-sse:active', id);
        }""",
        gone,
    )
    tab.page.reload()
    tab.wait_ready()
    expect(tab.page.locator("#notice")).to_contain_text("no longer on the server")
    expect(tab.page.locator(".conversation")).to_have_count(0)
    expect(tab.page.locator("#welcome")).to_be_visible()
    assert tab.chat("Hello")  # and a new chat starts


def test_unreachable_server_shows_a_retry(tab: ChatPage) -> None:
    tab.page.route("**/chat", lambda route: route.abort("connectionrefused"))
    tab.send("Hello")
    reply = tab.reply(1, "error")
    expect(reply.locator(".message-error")).to_contain_text("reach the server")
    expect(tab.page.locator("#connection")).to_have_attribute("data-state", "error")
    tab.page.unroute("**/chat")
    reply.get_by_role("button", name="Retry this message").click()
    tab.reply(1)
    expect(tab.messages).to_have_count(2)


def test_offline_is_shown_and_sending_waits_for_the_network(
    context: BrowserContext, tab: ChatPage
) -> None:
    context.set_offline(True)
    connection = tab.page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "offline")
    expect(connection).to_have_text("Offline")
    tab.send("Hello")
    reply = tab.reply(1, "error")
    expect(reply.locator(".message-error")).to_contain_text("reach the server")
    context.set_offline(False)
    expect(connection).to_have_attribute("data-state", "idle")
    reply.get_by_role("button", name="Retry this message").click()
    tab.reply(1)


def test_history_that_fails_to_load_can_be_retried(tab: ChatPage) -> None:
    tab.chat("Hello, my name is Ada")
    history = re.compile(r"/history(\?|$)")
    tab.page.route(history, lambda route: route.abort("connectionreset"))
    tab.page.reload()
    notice = tab.page.locator("#notice")
    expect(notice).to_contain_text("Couldn't load this conversation")
    expect(tab.page.locator("#connection")).to_have_attribute("data-state", "error")
    expect(tab.messages).to_have_count(0)
    tab.page.unroute(history)
    notice.get_by_role("button", name="Try again").click()
    expect(tab.messages).to_have_count(2)
    expect(notice).to_be_hidden()
    expect(tab.page.locator("#connection")).to_have_attribute("data-state", "idle")


def _drop_after_first_chunk(route: Route) -> None:
    ids = {"conversation_id": "e" * 32, "message_id": "m7"}
    events = [
        ("connected", "m7:0", ids),
        ("message", "m7:1", {**ids, "content": "Half a rep"}),
    ]
    route.fulfill(status=200, content_type="text/event-stream", body=sse(events, retry=50))


def test_dropped_stream_resumes_from_the_last_event_id(tab: ChatPage) -> None:
    resumes: list[str | None] = []
    ids = {"conversation_id": "e" * 32, "message_id": "m7"}

    def resume(route: Route) -> None:
        resumes.append(route.request.headers.get("last-event-id"))
        rest = [
            ("message", "m7:2", {**ids, "content": "ly, resumed"}),
            ("completed", "m7:3", {**ids, "content": "Half a reply, resumed"}),
        ]
        route.fulfill(status=200, content_type="text/event-stream", body=sse(rest))

    tab.page.route("**/chat", _drop_after_first_chunk)
    tab.page.route("**/conversations/*/stream", resume)
    assert tab.chat("Hello") == "Half a reply, resumed"
    assert resumes == ["m7:1"]


def test_dropped_stream_of_a_reply_that_has_ended_settles_from_history(tab: ChatPage) -> None:
    stored = {"id": "m7", "role": "assistant", "content": "Half a reply, stored", "status": ""}
    stored["created_at"] = "2025-01-01T00:00:00+00:00"
    history = {"conversation_id": "e" * 32, "messages": [stored]}
    tab.page.route("**/chat", _drop_after_first_chunk)
    tab.page.route("**/conversations/*/stream", lambda route: route.fulfill(status=204))
    tab.page.route("**/conversations/*/history", lambda route: route.fulfill(json=history))

    stored["status"] = "complete"  # the reply finished while we were away
    assert tab.chat("Hello") == "Half a reply, stored"

    stored["status"] = "interrupted"  # it was cut short: say so, keep what there is
    tab.send("Hello again")
    reply = tab.reply(2, "error")
    expect(reply.locator(".message-body")).to_have_text("Half a reply, stored")
    expect(reply.locator(".message-error")).to_contain_text("ended before it was finished")


def skip_unless_resumable(web_server: str) -> None:
    _, _, schema = get(web_server + "/openapi.json")
    if "/conversations/{conversation_id}/stream" not in json.loads(schema)["paths"]:
        pytest.skip("the server has no resume endpoint (GET /conversations/{id}/stream)")


def test_reply_cut_off_mid_stream_resumes_on_the_live_server(
    browser: Browser, web_server: str, cutting_proxy: CuttingProxy, open_tab: OpenTab
) -> None:
    skip_unless_resumable(web_server)
    context = browser.new_context(base_url=cutting_proxy.url)
    try:
        tab = open_tab(context)
        resumes: list[str | None] = []
        tab.page.on(
            "request",
            lambda r: (
                resumes.append(r.headers.get("last-event-id"))
                if r.url.endswith("/stream")
                else None
            ),
        )
        tab.chat("Hello, my name is Ada")
        cuts = cutting_proxy.cuts
        cutting_proxy.arm(events=3)
        reply = tab.chat("Tell me a joke")  # cut after three chunks, resumed, finished
        assert cutting_proxy.cuts == cuts + 1
        assert len(resumes) == 1
        assert re.fullmatch(r"[0-9a-f]+:[0-9]+", resumes[0] or "")
        tab.page.reload()  # what was shown is what the server stored
        tab.wait_ready()
        expect(tab.messages).to_have_count(4)
        assert tab.transcript()[3] == ("assistant", reply)
    finally:
        context.close()


def test_dropped_stream_without_resume_offers_retry(tab: ChatPage) -> None:
    requests: list[str] = []
    tab.page.on("request", lambda request: requests.append(request.url))
    tab.page.route("**/chat", _drop_after_first_chunk)
    tab.send("Hello")  # the live server cannot resume this conversation: 404 or 405
    reply = tab.reply(1, "error")
    expect(reply.locator(".message-body")).to_have_text("Half a rep")  # what came is kept
    expect(reply.locator(".message-error")).to_contain_text("connection was lost")
    expect(reply.get_by_role("button", name="Retry this message")).to_be_visible()
    assert sum("/stream" in url for url in requests) == 1  # tried once


# ---- accessibility, themes, small screens -----------------------------------------------


def test_keyboard_and_screen_reader_basics(tab: ChatPage) -> None:
    page = tab.page
    box = page.get_by_label("Message", exact=True)
    expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    expect(page.get_by_role("button", name="New chat")).to_be_visible()
    expect(page.get_by_role("navigation", name="Saved conversations")).to_be_attached()

    page.keyboard.press("Tab")  # the first stop is the skip link, and it leads to the box
    expect(page.get_by_role("link", name="Skip to the message box")).to_be_focused()
    page.keyboard.press("Enter")
    expect(box).to_be_focused()

    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    assert box.input_value() == "line one\nline two"
    expect(tab.messages).to_have_count(0)
    box.press("Enter")
    tab.reply(1)
    assert tab.transcript()[0] == ("user", "line one\nline two")
    expect(box).to_be_focused()
    expect(tab.replies.first).not_to_have_attribute("aria-busy", "true")

    tab.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    tab.replies.first.get_by_role("button", name="Copy this reply").click()
    expect(tab.replies.first.locator(".copy")).to_have_text("Copied")
    copied = tab.page.evaluate("navigator.clipboard.readText()")
    assert copied == tab.replies.first.locator(".message-body").inner_text()


def test_themes_follow_the_system_and_the_toggle(
    browser: Browser, web_server: str, open_tab: OpenTab
) -> None:
    for scheme in ("light", "dark"):
        context = browser.new_context(
            base_url=web_server, viewport={"width": 1200, "height": 800}, color_scheme=scheme
        )
        try:
            chat = open_tab(context)
            chat.chat("Hello, my name is Ada")
            _markdown_reply(chat, "How do I stream a reply with curl?")
            chat.send("/simulate error")
            chat.reply(3, "error")
            chat.page.get_by_label("Message", exact=True).fill("Enter sends, Shift+Enter: new line")
            background = chat.page.evaluate("getComputedStyle(document.body).backgroundColor")
            expected_dark = scheme == "dark"
            assert _is_dark(background) == expected_dark, background
            toggle = chat.page.locator("#theme-toggle")
            expect(toggle).to_have_attribute("aria-pressed", str(expected_dark).lower())
            chat.screenshot(f"web-{scheme}")

            toggle.click()  # the other theme, kept across a reload
            chat.page.reload()
            chat.wait_ready()
            background = chat.page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert _is_dark(background) != expected_dark, background
        finally:
            context.close()


MARKDOWN_REPLY = """Use `curl -N` so it prints each event as it arrives:

```bash
curl -N http://127.0.0.1:8000/chat -d message=Hello
```

- **`-N`** turns off curl's output buffering
- each `data:` line is *one* JSON object

See [the SSE spec](https://html.spec.whatwg.org/multipage/server-sent-events.html)."""


def _markdown_reply(chat: ChatPage, question: str) -> None:
    """One turn answered with Markdown, as a real model writes it (the simulated bot doesn't)."""
    ids = {"conversation_id": chat.page.evaluate("sessionStorage['chatbot-sse:active']")}
    ids["message_id"] = "m9"
    events = [("connected", "m9:0", ids), ("message", "m9:1", {**ids, "content": MARKDOWN_REPLY})]
    events += [("completed", "m9:2", {**ids, "content": MARKDOWN_REPLY})]
    body = sse(events, 3000)
    chat.page.route(
        "**/chat",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
        times=1,
    )
    chat.chat(question)


def _is_dark(css_color: str) -> bool:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return (red + green + blue) / 3 < 128


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_sized_screen(
    browser: Browser, web_server: str, open_tab: OpenTab, scheme: Literal["light", "dark"]
) -> None:
    context = browser.new_context(
        base_url=web_server,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme=scheme,
    )
    try:
        chat = open_tab(context)
        page = chat.page
        expect(page.locator("#sidebar")).not_to_be_in_viewport()
        chat.chat("Tell me a joke")
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], "the page scrolls sideways"
        expect(page.get_by_label("Message", exact=True)).to_be_in_viewport()
        chat.screenshot(f"web-phone-{scheme}")

        menu = page.get_by_role("button", name="Show conversations")
        menu.click()
        expect(menu).to_have_attribute("aria-expanded", "true")
        expect(page.locator("#sidebar")).to_be_in_viewport()
        expect(page.get_by_role("button", name="New chat")).to_be_focused()
        expect(page.locator(".conversation")).to_have_count(1)
        chat.screenshot(f"web-phone-{scheme}-conversations")
        page.keyboard.press("Escape")
        expect(menu).to_be_focused()
        expect(menu).to_have_attribute("aria-expanded", "false")
    finally:
        context.close()
