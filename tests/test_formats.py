"""Issue 13's framings, as a client reads them back: SSE, NDJSON, the AI SDK UI stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.dialects import StreamParser, get_dialect
from proxy.errors import UpstreamProtocolError, error_body
from proxy.formats import (
    NDJSON,
    SSE,
    STREAM_FORMATS,
    TEXT,
    UI_MESSAGE_STREAM,
    OutputFormat,
    negotiate,
)
from proxy.formats.completions import ChatCompletionChunkEncoder, Completion
from proxy.formats.encoders import Encoder
from proxy.values import Done, Ending, Failed, Usage, normalize_finish_reason
from proxy.wire import SSEDecoder
from tests.splits import cuts, split_at, text_of, token_text

FAILED = Failed(error_body(UpstreamProtocolError("upstream connection dropped"), "req-1"))


def render(encoder: Encoder, deltas: list[str], outcome: Ending) -> bytes | None:
    body = encoder.opening() + b"".join(encoder.delta(text) for text in deltas)
    closing = encoder.end(outcome)
    return None if closing is None else body + closing


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """Each event's fields (`event`, `id`, `data` parsed as JSON); comments skipped."""
    events = []
    for block in body.decode().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            if fields.get("data", "").startswith("{"):
                fields["data"] = orjson.loads(fields["data"])
            events.append(fields)
    return events


# --- SSE ---------------------------------------------------------------------------------


def test_sse_delta_ids_are_end_offsets_and_done_carries_usage() -> None:
    done = Done("stop", Usage(prompt_tokens=7, completion_tokens=3))
    body = render(SSE.encoder(), ["Hel", "lo 🙂", "!"], done)
    assert body is not None
    events = sse_events(body)
    assert [(e["event"], e.get("id")) for e in events] == [
        ("delta", "3"),
        ("delta", "7"),  # the emoji is one character
        ("delta", "8"),
        ("done", "8"),
    ]
    assert [e["data"]["text"] for e in events[:3]] == ["Hel", "lo 🙂", "!"]
    assert events[3]["data"] == {
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }


def test_sse_done_says_null_when_reason_and_usage_are_unknown() -> None:
    body = render(SSE.encoder(), ["x"], Done())
    assert body is not None
    assert sse_events(body)[-1]["data"] == {"finish_reason": None, "usage": None}


def test_sse_failure_is_an_error_event_with_the_json_error_and_no_done() -> None:
    body = render(SSE.encoder(), ["partial"], FAILED)
    assert body is not None
    events = sse_events(body)
    assert [e["event"] for e in events] == ["delta", "error"]
    assert events[1]["data"] == {
        "error": {
            "type": "upstream_protocol_error",
            "message": "upstream connection dropped",
            "request_id": "req-1",
        }
    }


def test_sse_replay_numbers_events_from_its_offset() -> None:
    body = render(SSE.encoder(offset=10), ["abc"], Done())
    assert body is not None
    assert [e["id"] for e in sse_events(body)] == ["13", "13"]


def test_sse_keepalive_is_a_comment_a_parser_ignores() -> None:
    assert SSEDecoder(max_event_bytes=1 << 20).feed(SSE.encoder().keepalive) == []


@given(st.lists(token_text, max_size=20))
def test_sse_any_text_reads_back_exactly_with_a_whatwg_parser(deltas: list[str]) -> None:
    deltas = [text for text in deltas if text]
    body = render(SSE.encoder(), deltas, Done())
    assert body is not None
    events = SSEDecoder(max_event_bytes=1 << 20).feed(body)
    assert [e.event for e in events] == ["delta"] * len(deltas) + ["done"]
    assert "".join(orjson.loads(e.data)["text"] for e in events[:-1]) == "".join(deltas)


# --- NDJSON ------------------------------------------------------------------------------


@given(st.lists(token_text, max_size=20))
def test_ndjson_is_one_json_object_per_line_with_the_sse_content(deltas: list[str]) -> None:
    deltas = [text for text in deltas if text]
    body = render(NDJSON.encoder(), deltas, Done("length", None))
    assert body is not None
    assert body.endswith(b"\n")
    lines = [orjson.loads(line) for line in body.split(b"\n")[:-1]]
    assert "".join(line["text"] for line in lines[:-1]) == "".join(deltas)
    assert [line["offset"] for line in lines[:-1]] == [
        len("".join(deltas[: i + 1])) for i in range(len(deltas))
    ]
    assert lines[-1] == {
        "event": "done",
        "offset": len("".join(deltas)),
        "finish_reason": "length",
        "usage": None,
    }


def test_ndjson_failure_is_an_error_line_and_no_done() -> None:
    body = render(NDJSON.encoder(), ["a"], FAILED)
    assert body is not None
    last = orjson.loads(body.split(b"\n")[-2])
    assert last["event"] == "error"
    assert last["error"]["type"] == "upstream_protocol_error"
    assert b'"done"' not in body


def test_ndjson_keepalive_is_a_ping_object() -> None:
    assert orjson.loads(NDJSON.encoder().keepalive) == {"event": "ping"}


# --- raw text ----------------------------------------------------------------------------


def test_raw_text_is_unframed_and_a_failure_means_abort() -> None:
    assert render(TEXT.encoder(), ["a", "é"], Done()) == "aé".encode()
    assert render(TEXT.encoder(), ["a"], FAILED) is None
    assert TEXT.encoder().keepalive == b""


# --- AI SDK UI message stream ------------------------------------------------------------


def ui_parts(body: bytes) -> list[Any]:
    return [event["data"] for event in sse_events(body)]


def test_ui_message_stream_parts_in_order() -> None:
    encoder = UI_MESSAGE_STREAM.encoder(message_id="msg-1")
    body = render(encoder, ["Hi", " there"], Done("stop", Usage(5, 2)))
    assert body is not None
    assert ui_parts(body) == [
        {"type": "start", "messageId": "msg-1"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Hi"},
        {"type": "text-delta", "id": "text-0", "delta": " there"},
        {"type": "text-end", "id": "text-0"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {"usage": {"prompt_tokens": 5, "completion_tokens": 2}},
        },
        "[DONE]",
    ]


def test_ui_message_stream_empty_answer_has_no_text_part() -> None:
    body = render(UI_MESSAGE_STREAM.encoder(message_id="m"), [], Done())
    assert body is not None
    assert [part if part == "[DONE]" else part["type"] for part in ui_parts(body)] == [
        "start",
        "start-step",
        "finish-step",
        "finish",
        "[DONE]",
    ]


def test_ui_message_stream_failure_is_an_error_part_and_never_finish() -> None:
    body = render(UI_MESSAGE_STREAM.encoder(message_id="m"), ["partial"], FAILED)
    assert body is not None
    parts = ui_parts(body)
    assert parts[-1] == {"type": "error", "errorText": "upstream connection dropped"}
    assert all(part != "[DONE]" and part["type"] != "finish" for part in parts)


@pytest.mark.parametrize(
    ("reason", "ui_reason"),
    [("stop", "stop"), ("length", "length"), ("content_filter", "content-filter"),
     ("tool_calls", "tool-calls"), ("other", "other"), (None, None)],
)  # fmt: skip
def test_ui_finish_reason_uses_the_ai_sdk_words(reason: str | None, ui_reason: str) -> None:
    body = render(UI_MESSAGE_STREAM.encoder(), [], Done(reason))
    assert body is not None
    finish = ui_parts(body)[-2]
    assert finish.get("finishReason") == ui_reason


def test_ui_message_stream_names_its_protocol() -> None:
    assert UI_MESSAGE_STREAM.headers == {"x-vercel-ai-ui-message-stream": "v1"}
    assert UI_MESSAGE_STREAM.content_type.startswith("text/event-stream")


# --- finish reasons ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "normalized"),
    [("stop", "stop"), ("end_turn", "stop"), ("eos_token", "stop"), ("stop_sequence", "stop"),
     ("length", "length"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("content_filter", "content_filter"), ("something_new", "other"), (None, None), ("", None)],
)  # fmt: skip
def test_every_dialects_finish_reason_is_normalized(
    upstream: str | None, normalized: str | None
) -> None:
    assert normalize_finish_reason(upstream) == normalized


# --- negotiation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, TEXT),
        ("", TEXT),
        ("*/*", TEXT),
        ("text/plain", TEXT),
        ("text/plain; charset=utf-8", TEXT),
        ("text/event-stream", SSE),
        ("TEXT/EVENT-STREAM", SSE),
        ("application/x-ndjson", NDJSON),
        ("text/*", TEXT),
        ("application/*", NDJSON),
        ("text/event-stream, */*;q=0.1", SSE),
        ("text/plain;q=0.5, application/x-ndjson", NDJSON),
        ("text/*;q=0.9, text/plain;q=0", SSE),
        ("application/json, text/plain, */*", TEXT),  # axios's default
        ("text/html,application/xhtml+xml,*/*;q=0.8", TEXT),  # a browser navigating
        ("text/event-stream;q=0.5, application/x-ndjson;q=0.5", SSE),  # tie: server order
        ("garbage", TEXT),  # unreadable: no preference
        ("text/html", None),
        ("application/json", None),
        ("*/*;q=0", None),
        ("text/plain;q=0, text/event-stream;q=0, application/x-ndjson;q=0", None),
        ("text/event-stream;q=abc", None),
    ],
)
def test_accept_chooses_the_format(accept: str | None, chosen: OutputFormat | None) -> None:
    assert negotiate(accept, STREAM_FORMATS) is chosen


# --- what parsers report -----------------------------------------------------------------


def _parser(reason: str | None, prompt: int | None, completion: int | None) -> StreamParser:
    parser = get_dialect("openai").parser(1024)
    parser.finish_reason = reason  # type: ignore[misc]
    parser.usage = Usage(prompt, completion)  # type: ignore[misc]
    return parser


@pytest.mark.parametrize(
    ("parser", "done"),
    [
        (_parser("end_turn", 3, 9), Done("stop", Usage(3, 9))),
        (_parser(None, None, 4), Done(None, Usage(None, 4))),
        (_parser("length", None, None), Done("length", None)),
    ],
)
def test_the_end_says_what_the_parser_learned(parser: StreamParser, done: Done) -> None:
    assert Done.reported(parser.finish_reason, parser.usage) == done


# --- OpenAI's chat.completion.chunk stream (SPEC §5c) --------------------------------------

COMPLETION = Completion("chatcmpl-1", "default", 1796165454)
finish_reasons = st.sampled_from([None, "stop", "length", "content_filter", "other"])
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6))


def openai_read_back(body: bytes, cuts: list[int]) -> tuple[str, StreamParser]:
    """The chunks as the proxy's own `openai` dialect reads an upstream's, split anyhow."""
    parser = get_dialect("openai").parser(1_048_576)
    reads = [parser.feed(piece) for piece in split_at(body, cuts)] + [parser.close()]
    assert all(failure is None for _, failure in reads)
    return "".join(text_of(parts) for parts, _ in reads), parser


@given(
    deltas=st.lists(token_text.filter(bool), max_size=20),
    reason=finish_reasons,
    prompt=counts,
    completion=counts,
    include_usage=st.booleans(),
    cuts=cuts,
)
def test_openai_chunks_read_back_as_the_same_text_end_and_usage(
    deltas: list[str],
    reason: str | None,
    prompt: int | None,
    completion: int | None,
    include_usage: bool,
    cuts: list[int],
) -> None:
    usage = Usage(prompt, completion) if prompt is not None or completion is not None else None
    done = Done(reason, usage)
    encoder = ChatCompletionChunkEncoder(COMPLETION, include_usage)
    body = render(encoder, deltas, done)
    assert body is not None
    text, parser = openai_read_back(body, cuts)
    assert text == "".join(deltas)
    assert parser.complete
    # No reason said is relayed as null (issue 26): the proxy does not make a "stop" up.
    expected_reason = None if reason is None else reason
    if reason is not None and reason not in ("length", "content_filter"):
        expected_reason = "stop"
    assert parser.finish_reason == expected_reason
    expected = Usage(prompt, completion) if include_usage else Usage()
    assert parser.usage == expected
    assert body.endswith(b"data: [DONE]\n\n")


@given(deltas=st.lists(token_text.filter(bool), min_size=1, max_size=10), cuts=cuts)
def test_a_failed_openai_stream_ends_in_an_error_event_the_reader_fails_on(
    deltas: list[str], cuts: list[int]
) -> None:
    body = render(ChatCompletionChunkEncoder(COMPLETION, include_usage=True), deltas, FAILED)
    assert body is not None
    assert b"[DONE]" not in body
    parser = get_dialect("openai").parser(1_048_576)
    reads = [parser.feed(piece) for piece in split_at(body, cuts)]
    assert "".join(text_of(parts) for parts, _ in reads) == "".join(deltas)
    assert any(failure is not None for _, failure in reads)
    last = orjson.loads(body.rstrip(b"\n").rpartition(b"\n\n")[2].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_protocol_error"
    assert last["error"]["type"] == "server_error"


def test_every_openai_chunk_shares_one_id_created_and_model() -> None:
    encoder = ChatCompletionChunkEncoder(COMPLETION, include_usage=True)
    body = render(encoder, ["a", "b"], Done("stop", Usage(1, 2)))
    assert body is not None
    events = [event["data"] for event in sse_events(body) if isinstance(event["data"], dict)]
    assert {(e["id"], e["object"], e["created"], e["model"]) for e in events} == {
        ("chatcmpl-1", "chat.completion.chunk", 1796165454, "default")
    }
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["usage"] for e in events] == [
        None,
        None,
        None,
        None,
        {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    ]
