"""The `chatbot-sse` command: `serve`, `chat` (a terminal client) and `loadtest`.

`chat` talks to a server only through the wire contract, with the same SSE
parser as the load tester, so it works against any deployment. It reads one
message per line from stdin, so it works in a terminal, in tmux and in a pipe
(`printf 'hi\\nmore\\n' | chatbot-sse chat`), and prints each chunk the moment
it arrives: the typewriter effect is the stream itself, not an animation.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, TextIO

import httpx
import orjson
import typer

from chatbot_sse.loadtest.cli import loadtest
from chatbot_sse.loadtest.parser import SSEParser

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.command("loadtest")(loadtest)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides PORT.")] = None,
) -> None:
    """Run the server with uvicorn (one process; use gunicorn for production).

    Served like a gunicorn worker: requests must arrive within
    REQUEST_READ_TIMEOUT, and SIGTERM drains for DRAIN_SECONDS before the
    streams left are handed off.
    """
    import uvicorn

    from chatbot_sse.config import load_settings
    from chatbot_sse.workers import (
        HTTP_PROTOCOL,
        drain_graceful_timeout,
        graceful_shutdown_timeout,
    )

    settings = load_settings()
    uvicorn.run(
        "chatbot_sse.main:app",
        host=host or settings.host,
        port=port if port is not None else settings.port,
        reload=settings.debug,
        log_level=settings.log_level.lower(),
        access_log=False,
        http=HTTP_PROTOCOL,
        timeout_graceful_shutdown=graceful_shutdown_timeout(
            drain_graceful_timeout(settings.drain_seconds)
        ),
    )


class ChatSession:
    """One conversation: remembers its id across turns and prints replies as they stream."""

    def __init__(self, http: httpx.Client, out: TextIO, err: TextIO) -> None:
        self.http = http
        self.out = out
        self.err = err
        self.conversation_id: str | None = None
        self.replying = False  # the reply's first bytes came: a failure now cuts it short

    def say(self, message: str) -> bool:
        """Send one message and print the reply; False (after saying why) when it failed."""
        payload: dict[str, Any] = {"message": message}
        if self.conversation_id:
            payload["conversation_id"] = self.conversation_id
        self.replying = False
        try:
            with self.http.stream(
                "POST", "/chat", json=payload, headers={"Accept": "text/event-stream"}
            ) as resp:
                if resp.status_code != 200:
                    self._error(f"HTTP {resp.status_code}: {_error_message(resp.read())}")
                    return False
                return self._stream(resp)
        except httpx.TransportError as exc:
            if self.replying:  # the reply had begun: end its line, and say it was cut
                self.out.write("\n")
                self.out.flush()
                self._error(f"the connection was lost mid-reply: {exc or type(exc).__name__}")
            elif isinstance(exc, httpx.TimeoutException):
                self._error(f"no answer from {self.http.base_url} in time")
            else:
                self._error(f"cannot reach {self.http.base_url}: {exc or type(exc).__name__}")
        return False

    def _stream(self, resp: httpx.Response) -> bool:
        parser = SSEParser()
        self.out.write("bot> ")
        self.out.flush()
        self.replying = True
        for raw in resp.iter_bytes():
            for event in parser.feed(raw):
                data = orjson.loads(event.data)
                if event.type == "connected":
                    self.conversation_id = data.get("conversation_id", self.conversation_id)
                elif event.type == "message":
                    self.out.write(data.get("content", ""))
                    self.out.flush()
                elif event.type == "completed":
                    self.out.write("\n")
                    self.out.flush()
                    return True
                elif event.type == "error":
                    err = data.get("error", {})
                    self.out.write("\n")
                    self._error(f"{err.get('code')}: {err.get('message')}")
                    return False
        self.out.write("\n")
        self._error("the stream ended before the reply was complete")
        return False

    def _error(self, text: str) -> None:
        self.err.write(f"error: {text}\n")
        self.err.flush()


def _error_message(body: bytes) -> str:
    try:
        err = orjson.loads(body).get("error", {})
        return f"{err.get('code')}: {err.get('message')}"
    except (orjson.JSONDecodeError, AttributeError):
        return body.decode("utf-8", "replace")[:200]


@app.command()
def chat(
    url: Annotated[str, typer.Argument(help="Base URL of the server.")] = "http://127.0.0.1:8000",
    conversation_id: Annotated[str | None, typer.Option(help="Continue this conversation.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each read.")] = 60.0,
) -> None:
    """Chat in the terminal. `/new` starts a new conversation, `/quit` or EOF ends."""
    interactive = sys.stdin.isatty()
    with httpx.Client(base_url=url, timeout=timeout) as http:
        session = ChatSession(http, sys.stdout, sys.stderr)
        session.conversation_id = conversation_id
        if interactive:
            print(f"chatting with {url}; /new for a new conversation, /quit to leave")
        failures = 0
        while True:
            if interactive:
                try:
                    line = input("you> ")
                except (EOFError, KeyboardInterrupt):
                    print()
                    break
            else:
                line = sys.stdin.readline()
                if not line:
                    break
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                break
            if text == "/new":
                session.conversation_id = None
                continue
            if not interactive:
                print(f"you> {text}")
            failures += not session.say(text)
        if session.conversation_id:
            print(f"conversation: {session.conversation_id}", file=sys.stderr)
    if failures and not interactive:
        raise typer.Exit(1)


def main() -> None:
    app()
