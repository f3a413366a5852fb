"""The SSE parser against the WHATWG spec: fixed edge cases, then properties.

The property tests compare the incremental bytes parser with a deliberately
naive reference that follows the spec's prose line by line on the whole
stream as text; any split of the input into reads must give the same events.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot_sse.loadtest.parser import Event, SSEParser


def reference(stream: str) -> tuple[list[tuple[str, str, str]], int | None]:
    """The spec's algorithm, literally, on the whole decoded stream."""
    if stream.startswith("\ufeff"):
        stream = stream[1:]
    lines = re.split(r"\r\n|\r|\n", stream)
    lines.pop()  # the last piece is not a complete line
    events: list[tuple[str, str, str]] = []
    data, etype, last_id, retry = "", "", "", None
    for line in lines:
        if line == "":
            if data == "":
                etype = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append((etype or "message", data, last_id))
            data, etype = "", ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            value = value.removeprefix(" ")
        else:
            field, value = line, ""
        if field == "event":
            etype = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events, retry


def parse_in_pieces(raw: bytes, cuts: list[int]) -> tuple[list[tuple[str, str, str]], SSEParser]:
    parser = SSEParser()
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(raw)]:
        events.extend(parser.feed(raw[start:cut]))
        start = max(start, cut)
    return [(e.type, e.text, e.id) for e in events], parser


def test_the_contract_example() -> None:
    raw = (
        b'retry: 3000\nevent: connected\nid: m1:0\ndata: {"type": "connected"}\n\n'
        b': ping\n\nevent: message\nid: m1:1\ndata: {"content": "Hi"}\n\n'
    )
    events = SSEParser().feed(raw)
    assert events == [
        Event("connected", b'{"type": "connected"}', "m1:0"),
        Event("message", b'{"content": "Hi"}', "m1:1"),
    ]


def test_multi_line_data_is_joined_with_lf_and_trailing_lf_dropped() -> None:
    assert SSEParser().feed(b"data: a\ndata:b\ndata\n\n") == [Event("message", b"a\nb\n", "")]


def test_crlf_split_between_reads_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == [Event("message", b"x", "")]
    assert parser.feed(b"\ndata: y\r\r") == [Event("message", b"y", "")]


def test_comments_are_counted_and_not_events() -> None:
    parser = SSEParser()
    assert parser.feed(b": ping\n\n: ping\n") == []
    assert parser.comments == 2


def test_id_with_nul_is_ignored_and_ids_persist() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "1"]


def test_retry_needs_digits_only() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 12x\n\nretry: 2500\n\nretry: -1\n\n")
    assert parser.retry == 2500


def test_bom_is_dropped_once_even_when_split() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb\xbfdata: \xef\xbb\xbfa\n\n") == [
        Event("message", b"\xef\xbb\xbfa", "")
    ]


def test_unterminated_event_at_the_end_is_not_dispatched() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [Event("message", b"a", "")]


def test_event_type_resets_after_an_empty_dispatch() -> None:
    assert SSEParser().feed(b"event: x\n\ndata: a\n\n") == [Event("message", b"a", "")]


_tokens = st.sampled_from(
    ["data", "event", "id", "retry", "message", ":", ": ", " ", "\r", "\n", "\r\n",
     "x", "é", "✓", "1", "42", "\0", "\ufeff", "ping", "data:", "id:"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    tokens=st.lists(_tokens, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_matches_the_reference_for_any_input_and_any_split(
    tokens: list[str], cuts: list[int]
) -> None:
    text = "".join(tokens)
    raw = text.encode()
    got, parser = parse_in_pieces(raw, cuts)
    expected, retry = reference(text)
    assert got == expected
    assert parser.retry == retry


_field_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["message", "connected", "completed", "error", "custom"]),
            st.lists(_field_text, min_size=1, max_size=3),
            st.text(alphabet="abc:0123456789", min_size=1, max_size=8),
        ),
        max_size=6,
    ),
    eol=st.sampled_from(["\n", "\r", "\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=10),
)
def test_serialised_events_come_back_whole(
    events: list[tuple[str, list[str], str]], eol: str, cuts: list[int]
) -> None:
    text = "".join(
        f": ping{eol}event: {etype}{eol}id: {eid}{eol}"
        + "".join(f"data: {line}{eol}" for line in lines)
        + eol
        for etype, lines, eid in events
    )
    got, parser = parse_in_pieces(text.encode(), cuts)
    assert got == [(etype, "\n".join(lines), eid) for etype, lines, eid in events]
    assert parser.comments == len(events)
