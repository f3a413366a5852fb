"""Incremental Server-Sent Events parser working on bytes, per the WHATWG spec.

The load tester parses every event of thousands of concurrent streams, so this
is its hot path. It therefore works on the raw bytes as they come off the
socket: lines are found with C-level `bytes` methods, `data` stays `bytes`
(orjson reads bytes directly, so no UTF-8 decode of the payload), and common
event type names are interned instead of decoded each time.

What the spec (html.spec.whatwg.org, "Parsing an event stream") asks, and how:
- lines end in CRLF, LF or CR, also when a CRLF is split across two reads;
- a leading UTF-8 BOM is dropped once;
- `:` starts a comment (counted in `comments`, which is how keep-alive pings show);
- `field: value` loses one space after the colon; a line without a colon is a
  field with an empty value;
- `data` lines are joined with LF; a blank line dispatches the event unless the
  data buffer is empty (then only the event type is reset);
- `id` containing NUL is ignored; the last event id persists across events;
- `retry` is applied only when it is all ASCII digits;
- an event not terminated by a blank line when the stream ends is discarded.
"""

from __future__ import annotations

__all__ = ["Event", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_INTERNED: dict[bytes, str] = {
    b"message": "message",
    b"connected": "connected",
    b"completed": "completed",
    b"error": "error",
}


class Event:
    """One dispatched event. `data` is bytes: decode (or `orjson.loads`) only if needed."""

    __slots__ = ("data", "id", "type")

    def __init__(self, type: str, data: bytes, id: str) -> None:
        self.type = type
        self.data = data
        self.id = id

    @property
    def text(self) -> str:
        """The data as text, decoded the way a browser's EventSource would."""
        return self.data.decode("utf-8", "replace")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.type, self.data, self.id) == (other.type, other.data, other.id)

    def __hash__(self) -> int:
        return hash((self.type, self.data, self.id))

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, data={self.data!r}, id={self.id!r})"


class SSEParser:
    """Feed it bytes in arbitrary pieces; it returns the events completed by each piece."""

    __slots__ = (
        "_buf",
        "_data",
        "_event",
        "_skip_lf",
        "_started",
        "comments",
        "last_event_id",
        "retry",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = b""
        self._skip_lf = False
        self._started = False
        self.comments = 0
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse `chunk` (any split of the stream is fine) and return the events it completed."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if self._buf:
            chunk = self._buf + chunk
        if not self._started:
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._buf = chunk  # could still become a BOM: wait for more
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                # The LF of a CRLF may be in the next read; the CR alone already ends the line.
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        self._buf = lines.pop()
        if not lines:
            return []
        events: list[Event] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    etype = self._event
                    name = _INTERNED.get(etype) if etype else "message"
                    if name is None:
                        name = etype.decode("utf-8", "replace")
                    events.append(Event(name, b"\n".join(data), self.last_event_id))
                    data.clear()
                self._event = b""
                continue
            colon = line.find(b":")
            if colon == 0:
                self.comments += 1
                continue
            if colon < 0:
                field, value = line, b""
            else:
                field = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                self._event = value
            elif field == b"id":
                if b"\0" not in value:
                    self.last_event_id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit():  # bytes.isdigit is ASCII-only
                self.retry = int(value)
        return events
