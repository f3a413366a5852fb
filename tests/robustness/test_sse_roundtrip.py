"""Property tests: whatever the encoder writes, a spec-conformant client reads back exactly.

The data is any JSON value orjson represents faithfully (text with newlines, CR,
NUL and other control characters, any non-surrogate unicode; 64-bit integers;
finite floats), the bytes are fed split at arbitrary points, and the judge is
`ssespec.SpecParser`, written from the WHATWG spec and not from the encoder.
Event names and ids are chosen by the server (`connected`, `<reply id>:<n>`), so
they are drawn from the tokens it uses, not from arbitrary text.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ssespec import SpecParser

from chatbot_sse import sse
from livesupport import parse_sse

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(), json_values, max_size=6)
names = st.sampled_from(
    ["connected", "message", "completed", "error", "reconnect"]
) | st.from_regex(r"\A[a-z][a-z_.-]{0,20}\Z")
ids = st.from_regex(r"\A[0-9a-f]{1,32}:[0-9]{1,6}\Z")
text_with_controls = st.text(
    alphabet=st.sampled_from('\n\r\0\t\x0b\x0c\x1b\x7f\u2028\u2029\ufeff\u0085 :éあ😀"\\'),
    max_size=40,
)


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    bounds = [0, *points, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def read(raw: bytes, cuts: list[int]) -> SpecParser:
    parser = SpecParser()
    for chunk in split_at(raw, cuts):
        parser.feed(chunk)
    parser.feed(b"", final=True)
    return parser


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.tuples(names, ids, payloads), min_size=1, max_size=5),
    retry=st.none() | st.integers(min_value=0, max_value=10**9),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_numbered_events_round_trip(
    frames: list[tuple[str, str, dict[str, Any]]], retry: int | None, cuts: list[int]
) -> None:
    prefix = b"" if retry is None else sse.retry_field(retry)
    raw = b"".join(
        sse.encode_event(name, event_id, data, prefix if n == 0 else b"")
        for n, (name, event_id, data) in enumerate(frames)
    )
    parser = read(raw, cuts)
    assert parser.retry == retry
    assert [(e.type, e.last_event_id, json.loads(e.data)) for e in parser.events] == frames
    # The tests' own parser (livesupport) agrees with the spec's.
    events, _, _ = parse_sse(raw)
    assert [(e.event, e.id, e.data) for e in events] == frames


@settings(max_examples=200, deadline=None)
@given(
    before=st.tuples(names, ids, payloads),
    unnumbered=st.tuples(names, payloads),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_an_unnumbered_event_keeps_the_last_event_id(
    before: tuple[str, str, dict[str, Any]],
    unnumbered: tuple[str, dict[str, Any]],
    cuts: list[int],
) -> None:
    raw = sse.encode_event(*before) + sse.PING + sse.encode_unnumbered(*unnumbered)
    first, second = read(raw, cuts).events
    assert (first.type, first.last_event_id, json.loads(first.data)) == before
    assert (second.type, json.loads(second.data)) == unnumbered
    assert second.last_event_id == before[1]  # a reconnect resumes after the last real event


@settings(max_examples=200, deadline=None)
@given(content=text_with_controls, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_line_breaks_and_control_characters_stay_in_one_data_line(
    content: str, cuts: list[int]
) -> None:
    data = {"type": "message", "content": content, content: [content]}
    raw = sse.encode_event("message", "ab:1", data)
    assert raw.count(b"\n") == 4  # event, id, data, blank line
    assert b"\r" not in raw
    (event,) = read(raw, cuts).events
    assert json.loads(event.data) == data


@settings(max_examples=300, deadline=None)
@given(
    name=names,
    event_id=ids,
    data=payloads,
    contents=st.lists(st.text() | text_with_controls, max_size=10),
    retry=st.none() | st.integers(min_value=0, max_value=10**9),
)
def test_every_encoded_frame_is_one_event(
    name: str, event_id: str, data: dict[str, Any], contents: list[str], retry: int | None
) -> None:
    """The promise of `EventRun` (the hub's frames in the reply log): each frame ends with
    the blank line and holds no other, whatever the content; the SQLite store joins such
    frames in one row and splits them again at each blank line."""
    prefix = b"" if retry is None else sse.retry_field(retry)
    messages = sse.MessageFrames("r" * 28, {"conversation_id": "c" * 32})
    made = [sse.encode_event(name, event_id, data, prefix), *messages.frames(1, contents)]
    for raw in made:
        assert raw.find(b"\n\n") == len(raw) - 2, raw


def test_a_ping_dispatches_nothing() -> None:
    assert read(sse.PING * 3, [1, 5, 9]).events == []


@given(
    reply_id=st.from_regex(r"\A[0-9a-f]{28}\Z"),
    seq=st.integers(min_value=1, max_value=10**6),
    content=st.text() | text_with_controls,
    fields=st.sampled_from([{}, {"conversation_id": "c" * 32, "message_id": "m" * 28}])
    | st.dictionaries(st.text(), json_values, max_size=3),
)
@settings(max_examples=300)
def test_message_template_is_byte_identical_to_the_encoder(
    reply_id: str, seq: int, content: str, fields: dict[str, Any]
) -> None:
    """The hot path's pre-encoded `message` frames are exactly what `encode_event` writes."""
    assume(not set(fields) & {"type", "content"})  # the template writes these two itself
    data = {"type": "message", "content": content, **fields}
    expected = sse.encode_event("message", f"{reply_id}:{seq}", data)
    assert sse.MessageFrames(reply_id, fields).frame(seq, content) == expected


@given(
    first=st.integers(min_value=1, max_value=10**6),
    contents=st.lists(st.text() | text_with_controls, max_size=40),
)
@settings(max_examples=100)
def test_frames_of_a_batch_are_the_frames_of_each_chunk(first: int, contents: list[str]) -> None:
    """A batch of chunks (`MessageFrames.frames`) is framed exactly as chunk by chunk."""
    messages = sse.MessageFrames("r" * 28, {"conversation_id": "c" * 32})
    expected = [messages.frame(seq, text) for seq, text in enumerate(contents, first)]
    assert messages.frames(first, contents) == expected


def test_percent_signs_in_the_fields_and_content_are_kept_as_they_are() -> None:
    """The template is a `bytes %` format: a `%` of the reply's own fields must stay one."""
    fields = {"conversation_id": "c" * 32, "note%d": "100%s %% %b"}
    data = {"type": "message", "content": "50% %d", **fields}
    expected = sse.encode_event("message", "r:7", data)
    assert sse.MessageFrames("r", fields).frame(7, "50% %d") == expected
    assert sse.MessageFrames("r", fields).frames(7, ["50% %d"]) == [expected]


def test_said_joins_the_message_events_of_encoded_frames() -> None:
    fields = {"conversation_id": "c", "message_id": "r"}
    messages = sse.MessageFrames("r", fields)
    frames = [
        sse.encode_event(
            "connected", "r:0", {"type": "connected", **fields}, sse.retry_field(3000)
        ),
        messages.frame(1, "Hello"),
        messages.frame(2, ', \u00e9v\u00e9nement\n"quoted"'),
        sse.encode_event("completed", "r:3", {"type": "completed", "content": "x", **fields}),
    ]
    assert sse.said(frames) == 'Hello, \u00e9v\u00e9nement\n"quoted"'
    assert sse.said([b"".join(frames)]) == sse.said(frames)  # a row of several frames too
