"""An incremental SSE parser written from the WHATWG spec ("event stream interpretation").

Independent of the server's encoder on purpose: it is the judge in the round-trip
tests. It is fed bytes in chunks split anywhere (inside a UTF-8 sequence, between
the CR and LF of a CRLF) and keeps the last event ID across events, as a browser does.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class Dispatched:
    type: str
    data: str
    last_event_id: str


class SpecParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._started = False
        self._after_cr = False
        self._event_type = ""
        self._data = ""
        self._last_event_id = ""
        self.retry: int | None = None
        self.events: list[Dispatched] = []

    def feed(self, chunk: bytes, final: bool = False) -> None:
        text = self._decoder.decode(chunk, final)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        for char in text:
            if self._after_cr:
                self._after_cr = False
                if char == "\n":  # the LF of a CRLF: the line already ended at the CR
                    continue
            if char == "\r":
                self._after_cr = True
                self._line()
            elif char == "\n":
                self._line()
            else:
                self._text += char

    def _line(self) -> None:
        line, self._text = self._text, ""
        if line == "":
            self._dispatch()
        elif line.startswith(":"):
            return
        else:
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            self._field(name, value)

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                self._last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        if self._data == "":
            self._event_type = ""
            return
        data = self._data.removesuffix("\n")
        self.events.append(Dispatched(self._event_type or "message", data, self._last_event_id))
        self._event_type, self._data = "", ""
