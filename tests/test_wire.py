from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.wire import NDJSONDecoder, ServerSentEvent, SSEDecoder
from tests.splits import cuts, split_at

line_endings = st.sampled_from([b"\n", b"\r", b"\r\n"])
# A data line's value: anything but the line terminators themselves.
line_value = st.text(max_size=20).map(lambda s: s.replace("\r", "").replace("\n", ""))
event_name = st.one_of(st.none(), st.sampled_from(["message", "delta", "ping", "évènement"]))


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """A valid event stream with mixed line endings, comments and unknown fields."""
    stream = bytearray()
    expected: list[ServerSentEvent] = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        name = draw(event_name)
        values = draw(st.lists(line_value, min_size=1, max_size=3))
        lines: list[bytes] = []
        if draw(st.booleans()):
            lines.append(b": keep-alive")
        if name is not None:
            lines.append(b"event: " + name.encode())
        for value in values:
            # "data:value" loses nothing only when value has no leading space of its own.
            spaced = value.startswith(" ") or draw(st.booleans())
            lines.append((b"data: " if spaced else b"data:") + value.encode())
            if draw(st.booleans()):
                lines.append(b"id: 7")
            if draw(st.booleans()):
                lines.append(b"x-unknown-field: whatever")
        for line in [*lines, b""]:
            ending = draw(line_endings)
            if stream.endswith(b"\r") and not line and ending == b"\n":
                ending = b"\r\n"  # CR then LF would be one CRLF, not two line ends
            stream += line + ending
        expected.append(ServerSentEvent(name or "message", "\n".join(values).encode()))
    return bytes(stream), expected


def decode_sse(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


@given(event_streams(), cuts)
def test_sse_any_split_gives_the_same_events(
    stream_and_events: tuple[bytes, list[ServerSentEvent]], cut_points: list[int]
) -> None:
    stream, expected = stream_and_events
    assert decode_sse(split_at(stream, cut_points)) == expected


@given(event_streams())
def test_sse_one_byte_at_a_time_gives_the_same_events(
    stream_and_events: tuple[bytes, list[ServerSentEvent]],
) -> None:
    stream, expected = stream_and_events
    assert decode_sse([stream[i : i + 1] for i in range(len(stream))]) == expected


def test_sse_multibyte_characters_split_at_every_byte() -> None:
    text = "é世🙂𝄞 \u2028\u0085\x0c"
    stream = f"data: {text}\r\n\r\n".encode()
    for point in range(len(stream) + 1):
        assert decode_sse([stream[:point], stream[point:]]) == [
            ServerSentEvent("message", text.encode())
        ]


def test_sse_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    assert decode_sse([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [
        ServerSentEvent("message", b"a\nb")
    ]


def test_sse_multiline_data_is_joined_with_newlines() -> None:
    assert decode_sse([b"data: one\ndata:two\ndata\n\n"]) == [
        ServerSentEvent("message", b"one\ntwo\n")
    ]


def test_sse_event_without_data_is_not_dispatched() -> None:
    assert decode_sse([b"event: ping\n\n: comment\n\ndata: x\n\n"]) == [
        ServerSentEvent("message", b"x")
    ]


def test_sse_leading_byte_order_mark_is_ignored() -> None:
    assert decode_sse([b"\xef\xbb", b"\xbfdata: x\n\n"]) == [ServerSentEvent("message", b"x")]


def test_sse_unterminated_event_is_not_dispatched() -> None:
    assert decode_sse([b"data: x\n"]) == []


@given(st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=8)), max_size=5), cuts)
def test_ndjson_any_split_gives_the_same_lines(
    values: list[dict[str, str]], cut_points: list[int]
) -> None:
    import orjson

    lines = [orjson.dumps(value) for value in values]
    stream = b"".join(line + b"\n" for line in lines)
    decoder = NDJSONDecoder()
    decoded = [line for piece in split_at(stream, cut_points) for line in decoder.feed(piece)]
    assert [orjson.loads(line) for line in decoded + decoder.flush()] == values


def test_ndjson_keeps_unicode_line_separators_inside_a_line() -> None:
    decoder = NDJSONDecoder()
    line = '{"c":"a\u2028b\u0085c\x0cd"}'.encode()
    assert decoder.feed(line[:5]) == []
    assert decoder.feed(line[5:] + b"\r\n\n") == [line + b"\r"]
