from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import UpstreamProtocolError
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


LIMIT = 1024


def decode_sse(pieces: list[bytes], limit: int = LIMIT) -> list[ServerSentEvent]:
    decoder = SSEDecoder(max_event_bytes=limit)
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


# At most 4 entries: even all escaped (6 bytes a character) a drawn line stays under LIMIT, so
# the property is about splits, never about the line limit (unbounded, it failed at random).
@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=4), max_size=5),
    cuts,
)
def test_ndjson_any_split_gives_the_same_lines(
    values: list[dict[str, str]], cut_points: list[int]
) -> None:
    import orjson

    lines = [orjson.dumps(value) for value in values]
    stream = b"".join(line + b"\n" for line in lines)
    decoder = NDJSONDecoder(max_line_bytes=LIMIT)
    decoded = [line for piece in split_at(stream, cut_points) for line in decoder.feed(piece)]
    assert [orjson.loads(line) for line in decoded + decoder.flush()] == values


def test_ndjson_keeps_unicode_line_separators_inside_a_line() -> None:
    decoder = NDJSONDecoder(max_line_bytes=LIMIT)
    line = '{"c":"a\u2028b\u0085c\x0cd"}'.encode()
    assert decoder.feed(line[:5]) == []
    assert decoder.feed(line[5:] + b"\r\n\n") == [line + b"\r"]


# --- bounded memory ----------------------------------------------------------------------


def sse_until_failure(
    decoder: SSEDecoder, pieces: list[bytes]
) -> tuple[list[ServerSentEvent], UpstreamProtocolError | None]:
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
        if decoder.failure is not None:
            break
    return events, decoder.failure


@given(cuts)
def test_sse_event_over_the_limit_fails_after_the_events_before_it(cut_points: list[int]) -> None:
    small = b"data: before\n\n"
    for oversized in (
        b"data:" + b"x" * (LIMIT - 4) + b"\n\n",  # one line
        b": " + b"x" * (LIMIT - 1) + b"\n\n",  # a comment
        b"data: " + b"x" * 600 + b"\ndata: " + b"y" * 600 + b"\n\n",  # two lines of one event
        b"data: " + b"x" * 2 * LIMIT,  # never ends
    ):
        stream = small + oversized + b"data: after\n\n"
        events, failure = sse_until_failure(SSEDecoder(LIMIT), split_at(stream, cut_points))
        assert events == [ServerSentEvent("message", b"before")]
        assert failure is not None
        assert "1024 bytes" in failure.message


@given(cuts)
def test_sse_lines_and_events_of_exactly_the_limit_pass(cut_points: list[int]) -> None:
    half = LIMIT // 2
    stream = b"data:" + b"x" * (LIMIT - 5) + b"\r\n\r\n"  # a line of the limit
    stream += b"data:" + b"y" * half + b"\ndata:" + b"z" * half + b"\n\n"  # an event of it
    decoder = SSEDecoder(LIMIT)
    events = [event for piece in split_at(stream, cut_points) for event in decoder.feed(piece)]
    assert decoder.failure is None
    assert events == [
        ServerSentEvent("message", b"x" * (LIMIT - 5)),
        ServerSentEvent("message", b"y" * half + b"\n" + b"z" * half),
    ]


@given(cuts)
def test_ndjson_line_over_the_limit_fails_after_the_lines_before_it(
    cut_points: list[int],
) -> None:
    for oversized in (b"[" + b"1," * LIMIT + b"1]\n", b"[" + b"1," * LIMIT):
        stream = b'{"a":1}\n' + oversized + b'{"b":2}\n'
        decoder = NDJSONDecoder(LIMIT)
        lines: list[bytes] = []
        for piece in split_at(stream, cut_points):
            lines += decoder.feed(piece)
            if decoder.failure is not None:
                break
        assert lines == [b'{"a":1}']
        assert decoder.failure is not None


@pytest.mark.parametrize("decoder", [SSEDecoder(64 << 20), NDJSONDecoder(64 << 20)])
def test_an_unterminated_line_costs_linear_work(decoder: SSEDecoder | NDJSONDecoder) -> None:
    # 16 MiB in 1 KiB reads: rescanning what is buffered on every read would copy some
    # 128 GiB, minutes; once is milliseconds. The bound is only "promptly".
    piece = b"x" * 1024
    started = time.perf_counter()
    for _read in range(16 * 1024):
        assert decoder.feed(piece) == []
    assert time.perf_counter() - started < 5
