"""The web page on a server with `API_KEYS`, in real Chromium: it asks for a key and uses it.

The first refused request (401) opens the page's own key dialog; the key entered is kept
for the tab (sessionStorage, or localStorage with "Remember") and sent as a Bearer token
on every request, so the chat works, a reload brings the history back without asking
again, and the conversation belongs to that key on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from hardsupport import KEY_A, KEY_B, KEYS, bearer
from playwright.sync_api import Browser, BrowserContext, expect

from livesupport import ServerProcess

if TYPE_CHECKING:
    from tests.e2e.conftest import ChatPage

    OpenTab = Callable[[BrowserContext], ChatPage]

STORAGE_KEY = "chatbot-sse:api-key"


@pytest.fixture
def keyed_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(API_KEYS=KEYS, RESPONSE_DELAY="0.05", TOKEN_DELAY="0.01")


@pytest.fixture
def keyed_context(browser: Browser, keyed_server: ServerProcess) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=keyed_server.url, viewport={"width": 1200, "height": 800}
    )
    context.set_default_timeout(10_000)
    yield context
    context.close()


def enter_key(tab: ChatPage, key: str, *, remember: bool = False) -> None:
    dialog = tab.page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    tab.page.get_by_label("Key", exact=True).fill(key)
    if remember:
        tab.page.get_by_label("Remember on this device").check()
    tab.page.get_by_role("button", name="Use this key").click()


def stored(tab: ChatPage, storage: str) -> str | None:
    value = tab.page.evaluate(f"() => {storage}.getItem({STORAGE_KEY!r})")
    return None if value is None else str(value)


def test_the_page_asks_for_a_key_and_sends_it_on_every_request(
    keyed_server: ServerProcess, keyed_context: BrowserContext, open_tab: OpenTab
) -> None:
    tab = open_tab(keyed_context)
    expect(tab.page.locator("#key-dialog")).to_be_hidden()  # nothing asked before a 401

    tab.send("Hello, my name is Ada")
    expect(tab.page.locator("#key-reason")).to_contain_text("needs an API key")
    enter_key(tab, "not-a-key")
    expect(tab.page.locator("#key-reason")).to_contain_text("not accepted")
    assert stored(tab, "sessionStorage") is None  # a refused key is forgotten
    enter_key(tab, KEY_A)
    reply = tab.reply(1).locator(".message-body").inner_text()
    assert "Ada" in reply
    expect(tab.page.locator("#key-dialog")).to_be_hidden()
    assert stored(tab, "sessionStorage") == KEY_A
    assert stored(tab, "localStorage") is None  # not remembered unless asked

    # The conversation is KEY_A's on the server: the page really sent that key.
    cid = str(tab.page.evaluate("() => sessionStorage.getItem('chatbot-sse:active')"))
    history = f"{keyed_server.url}/conversations/{cid}/history"
    assert httpx.get(history, headers=bearer(KEY_A), timeout=10).status_code == 200
    assert httpx.get(history, headers=bearer(KEY_B), timeout=10).status_code == 404

    before = tab.transcript()
    tab.page.reload()
    tab.wait_ready()  # history loaded with the stored key, no dialog
    expect(tab.page.locator("#key-dialog")).to_be_hidden()
    expect(tab.messages).to_have_count(2)
    assert tab.transcript() == before
    assert "Ada" in tab.chat("What is my name?")


def test_remember_keeps_the_key_for_new_tabs_and_cancel_gives_the_text_back(
    keyed_context: BrowserContext, open_tab: OpenTab
) -> None:
    tab = open_tab(keyed_context)
    tab.send("Keep this text")
    expect(tab.page.locator("#key-dialog")).to_be_visible()
    tab.page.get_by_role("button", name="Cancel").click()
    expect(tab.page.locator("#key-dialog")).to_be_hidden()
    expect(tab.replies.first).to_have_attribute("data-state", "error")
    expect(tab.page.get_by_label("Message", exact=True)).to_have_value("Keep this text")

    tab.page.get_by_label("Message", exact=True).fill("")
    tab.send("Hello again")
    enter_key(tab, KEY_B, remember=True)
    expect(tab.replies.last).to_have_attribute("data-state", "done")
    assert stored(tab, "localStorage") == KEY_B

    other = open_tab(keyed_context)  # a new tab: its own sessionStorage, the same localStorage
    assert "Ada" not in other.chat("Hello, my name is Bob")
    expect(other.page.locator("#key-dialog")).to_be_hidden()
