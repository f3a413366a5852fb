"""Browser fixtures: Debian's Chromium, driven by Playwright, against a live server.

- `web_server`: `uvicorn chatbot_sse.main:app` in its own process on a free port, configured
  only by its environment (a fresh SQLite file, short simulated-engine delays), ready once
  `/health` answers. One per session: the page tests share it, each with its own browser
  context, so their localStorage and conversations never mix.
- `browser`: `/usr/bin/chromium` (installed by `make browser`; browsers cannot be downloaded
  here). Missing, the browser tests are skipped with the reason; with `CI` set they fail.
- `tab`: the page open in a fresh context; `open_tab` opens more (a second tab, another
  context). Each tab records dialogs (an `alert` from injected HTML would show up there),
  uncaught page errors and CSP violations; a test fails if a tab had either of the latter.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    expect,
)

from browsersupport import browser, playwright  # noqa: F401 - fixtures used below
from livesupport import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {timeout} s:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def web_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The live server's SQLite file: a test may write a long conversation into it directly,
    as another process sharing the store would."""
    return tmp_path_factory.mktemp("web-store") / "chat.db"


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory, web_store: Path) -> Iterator[str]:
    """The base URL of a live server with a fresh SQLite store."""
    tmp = tmp_path_factory.mktemp("web-server")
    port = free_port()
    env = {
        **os.environ,
        "STORE_URL": f"sqlite:///{web_store}",
        "RESPONSE_DELAY": "0.05",
        "TOKEN_DELAY": "0.03",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "chatbot_sse.main:app", "--host", "127.0.0.1",
             "--http", "chatbot_sse.request_deadline:RequestDeadlineProtocol",
             "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "2"],
            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class CuttingProxy:
    """A TCP proxy in front of the live server that can drop a reply's connection mid-stream.

    `arm(n)` makes it cut the next `POST /chat` response after `n` message events: a real
    dropped connection, which is what resume is for. It also rewrites the stream's
    `retry: 3000` to `retry: 0100` (same length, so HTTP chunk sizes stay right), so the
    page reconnects in 0.1 s instead of 3.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._cut_after = 0
        self._lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, events: int) -> None:
        with self._lock:
            self._cut_after = events

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        cut = {"after": 0, "seen": 0}
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:

            def requests() -> None:
                with contextlib.suppress(OSError):
                    while data := client.recv(65536):
                        if data.startswith(b"POST /chat "):
                            with self._lock:
                                cut["after"], self._cut_after = self._cut_after, 0
                            cut["seen"] = 0
                        upstream.sendall(data)
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)

            threading.Thread(target=requests, daemon=True).start()
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    data = data.replace(b"retry: 3000\n", b"retry: 0100\n")
                    client.sendall(data)
                    if cut["after"]:
                        cut["seen"] += data.count(b"event: message")
                        if cut["seen"] >= cut["after"]:
                            self.cuts += 1
                            client.shutdown(socket.SHUT_RDWR)
                            return


@pytest.fixture(scope="session")
def cutting_proxy(web_server: str) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(int(web_server.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


@pytest.fixture
def context(browser: Browser, web_server: str) -> Iterator[BrowserContext]:  # noqa: F811 - the imported fixture
    """A fresh browser profile: empty localStorage, desktop-sized, light by default."""
    context = browser.new_context(
        base_url=web_server, viewport={"width": 1200, "height": 800}, color_scheme="light"
    )
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@dataclass
class ChatPage:
    """The chat page in one tab, with what a test needs to drive and watch it."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._on_console)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(f"CSP violation: {message.text}")

    def open(self) -> ChatPage:
        self.page.goto("/")
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        self.page.wait_for_selector("html[data-ready]", state="attached")
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "idle")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages > li")

    @property
    def replies(self) -> Locator:
        return self.page.locator("#messages > li.message-assistant")

    def send(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        box.fill(text)
        box.press("Enter")

    def reply(self, n: int, state: str = "done") -> Locator:
        """The n-th reply (1-based) once it has reached `state`."""
        reply = self.replies.nth(n - 1)
        expect(reply).to_have_attribute("data-state", state)
        return reply

    def chat(self, text: str, state: str = "done") -> str:
        """Send a message and return the finished reply's text."""
        count = self.replies.count()
        self.send(text)
        return self.reply(count + 1, state).locator(".message-body").inner_text()

    def transcript(self) -> list[tuple[str, str]]:
        """(role, text) of every message, as shown."""
        rows: list[Any] = self.page.eval_on_selector_all(
            "#messages > li",
            "items => items.map(li => [li.dataset.role,"
            " li.querySelector('.message-body')?.innerText ?? ''])",
        )
        return [(str(role), str(text)) for role, text in rows]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / (re.sub(r"[^\w.-]", "_", name) + ".png")
        self.page.screenshot(path=str(path), animations="disabled", caret="hide")
        return path


@pytest.fixture
def open_tab() -> Iterator[Callable[[BrowserContext], ChatPage]]:
    """Opens the chat page in a new tab of a context; every tab must end without errors."""
    tabs: list[ChatPage] = []

    def open_tab(context: BrowserContext) -> ChatPage:
        tabs.append(ChatPage(context.new_page()).open())
        return tabs[-1]

    yield open_tab
    for tab in tabs:
        assert tab.errors == [], tab.errors


@pytest.fixture
def tab(context: BrowserContext, open_tab: Callable[[BrowserContext], ChatPage]) -> ChatPage:
    """The chat page, open and ready, in a fresh context."""
    return open_tab(context)
