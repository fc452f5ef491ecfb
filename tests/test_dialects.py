"""Every adapter: request shape per its API docs, and exact text for any split of its stream."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from proxy.conversation import Conversation, Message
from proxy.dialects import get_dialect
from proxy.errors import UpstreamProtocolError
from proxy.settings import DialectName, ModelSpec
from tests.splits import cuts, split_at, text_of, token_text


def sse(payload: object, event: str | None = None, space: bool = True) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + (b"data: " if space else b"data:") + orjson.dumps(payload) + b"\n\n"


def openai_stream(tokens: list[str], end: bool = True) -> bytes:
    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    body = b"".join(chunk({"content": t}) for t in tokens)
    return body + (chunk({}, "stop") + b"data: [DONE]\n\n" if end else b"")


def completions_stream(tokens: list[str], end: bool = True) -> bytes:
    def chunk(text: str, finish: str | None = None) -> bytes:
        return sse({"choices": [{"text": text, "index": 0, "finish_reason": finish}]})

    body = b"".join(chunk(t) for t in tokens)
    return body + (chunk("", "stop") + b"data: [DONE]\n\n" if end else b"")


def ollama_stream(tokens: list[str], end: bool = True) -> bytes:
    lines = [{"message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    if end:
        lines.append({"message": {"role": "assistant", "content": ""}, "done": True})
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def tgi_stream(tokens: list[str], end: bool = True) -> bytes:
    events = [
        sse({"token": {"id": i, "text": t, "special": False}, "generated_text": None}, space=False)
        for i, t in enumerate(tokens)
    ]
    events.insert(1, sse({"token": {"id": 0, "text": "<|x|>", "special": True}}, space=False))
    if end:
        final = {
            "token": {"id": 2, "text": "</s>", "special": True},
            "generated_text": "".join(tokens),
        }
        events.append(sse(final, space=False))
    return b"".join(events)


def anthropic_stream(tokens: list[str], end: bool = True) -> bytes:
    body = sse({"type": "message_start", "message": {"id": "m"}}, "message_start")
    body += sse({"type": "content_block_start", "index": 0}, "content_block_start")
    body += sse({"type": "ping"}, "ping")
    for t in tokens:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": t},
        }
        body += sse(delta, "content_block_delta")
    body += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    if end:
        body += sse(
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta"
        )
        body += sse({"type": "message_stop"}, "message_stop")
    return body


STREAMS: dict[str, Callable[..., bytes]] = {
    "openai": openai_stream,
    "openai-completions": completions_stream,
    "ollama": ollama_stream,
    "tgi": tgi_stream,
    "anthropic": anthropic_stream,
}

IN_BAND_ERRORS: dict[str, bytes] = {
    "openai": sse({"error": {"message": "boom", "type": "server_error"}}),
    "openai-completions": sse({"error": {"message": "boom", "type": "server_error"}}),
    "ollama": b'{"error":"boom"}\n',
    "tgi": sse({"error": "boom", "error_type": "generation"}, space=False),
    "anthropic": sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "boom"}}, "error"
    ),
}


def parse(dialect: str, pieces: list[bytes]) -> tuple[str, bool]:
    """The whole text and whether it is complete; any failure fails the test."""
    parser = get_dialect(dialect).parser(1_048_576)
    text = ""
    for parsed in (*(parser.feed(piece) for piece in pieces), parser.close()):
        piece, failure = parsed
        assert failure is None, failure
        text += text_of(piece)
    return text, parser.complete


@pytest.mark.parametrize("dialect", STREAMS)
@given(tokens=st.lists(token_text, max_size=25), cut_points=cuts)
def test_any_split_gives_the_same_text(
    dialect: str, tokens: list[str], cut_points: list[int]
) -> None:
    stream = STREAMS[dialect](tokens)
    assert parse(dialect, split_at(stream, cut_points)) == ("".join(tokens), True)


@pytest.mark.parametrize("dialect", STREAMS)
def test_multibyte_characters_split_at_every_byte(dialect: str) -> None:
    tokens = ["é", "世界", "🙂", "\u2028", "𝄞", "\u0085"]
    stream = STREAMS[dialect](tokens)
    for point in range(len(stream) + 1):
        assert parse(dialect, [stream[:point], stream[point:]]) == ("".join(tokens), True)


@pytest.mark.parametrize("dialect", STREAMS)
def test_missing_end_marker_leaves_the_stream_incomplete(dialect: str) -> None:
    assert parse(dialect, [STREAMS[dialect](["a", "b"], end=False)]) == ("ab", False)


@pytest.mark.parametrize("dialect", STREAMS)
def test_in_band_error_is_a_failure(dialect: str) -> None:
    parser = get_dialect(dialect).parser(1_048_576)
    assert parser.feed(STREAMS[dialect](["a"], end=False)) == (["a"], None)
    parts, failure = parser.feed(IN_BAND_ERRORS[dialect])
    assert parts == []
    assert isinstance(failure, UpstreamProtocolError)
    assert "boom" in failure.message


@pytest.mark.parametrize("dialect", STREAMS)
@given(tokens=st.lists(token_text, min_size=1, max_size=5), cut_points=cuts)
def test_text_before_an_in_band_error_survives_any_split(
    dialect: str, tokens: list[str], cut_points: list[int]
) -> None:
    """However the reads fall, the client gets the text the upstream sent before failing."""
    stream = STREAMS[dialect](tokens, end=False) + IN_BAND_ERRORS[dialect]
    parser = get_dialect(dialect).parser(1_048_576)
    text = ""
    failure: UpstreamProtocolError | None = None
    for piece in split_at(stream, cut_points):
        parts, failure = parser.feed(piece)
        text += text_of(parts)
        if failure is not None:
            break
    assert failure is not None
    assert "boom" in failure.message
    assert text == "".join(tokens)


@pytest.mark.parametrize("dialect", STREAMS)
def test_unreadable_event_is_a_failure(dialect: str) -> None:
    garbage = b"{nope\n" if dialect == "ollama" else b"data: {nope\n\n"
    parts, failure = get_dialect(dialect).parser(1_048_576).feed(garbage)
    assert parts == []
    assert isinstance(failure, UpstreamProtocolError)


def model(dialect: DialectName) -> ModelSpec:
    return ModelSpec(
        name="m",
        dialect=dialect,
        urls=("http://u",),
        api_key=SecretStr("sk-key"),
        upstream_model="up-model",
        max_tokens=1000,
    )


CONVERSATION = Conversation(
    messages=(Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")),
    system="be brief",
    max_tokens=50,
    temperature=0.5,
    top_p=0.9,
    stop=("END",),
)


def test_openai_request() -> None:
    request = get_dialect("openai").build_request(model("openai"), CONVERSATION)
    assert request.path == "/v1/chat/completions"
    assert request.headers == {"Authorization": "Bearer sk-key"}
    assert request.json == {
        "model": "up-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
        "stream": True,
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "stream_options": {"include_usage": True},
    }


def test_openai_sends_sampling_fields_only_when_given() -> None:
    conversation = Conversation(messages=(Message("user", "hi"),))
    request = get_dialect("openai").build_request(model("openai"), conversation)
    assert set(request.json) == {"model", "messages", "stream", "stream_options"}


def test_openai_finish_reason_alone_completes_the_stream() -> None:
    finish = sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    assert parse("openai", [openai_stream(["a"], end=False), finish]) == ("a", True)


def test_openai_completions_request() -> None:
    request = get_dialect("openai-completions").build_request(
        model("openai-completions"), CONVERSATION
    )
    assert request.path == "/v1/completions"
    assert request.headers == {"Authorization": "Bearer sk-key"}
    assert request.json == {
        "model": "up-model",
        "prompt": "be brief\n\nuser: hi\n\nassistant: hello\n\nuser: more\n\nassistant:",
        "stream": True,
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "stream_options": {"include_usage": True},
    }


def test_ollama_request() -> None:
    request = get_dialect("ollama").build_request(model("ollama"), CONVERSATION)
    assert request.path == "/api/chat"
    assert request.json == {
        "model": "up-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
        "stream": True,
        "options": {"num_predict": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["END"]},
    }


def test_tgi_request() -> None:
    request = get_dialect("tgi").build_request(model("tgi"), CONVERSATION)
    assert request.path == "/generate_stream"
    assert request.json == {
        "inputs": "be brief\n\nuser: hi\n\nassistant: hello\n\nuser: more\n\nassistant:",
        "stream": True,
        "parameters": {
            "max_new_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["END"],
            "details": True,
        },
    }


def test_tgi_request_leaves_out_values_tgi_rejects() -> None:
    conversation = Conversation(messages=(Message("user", "hi"),), temperature=0.0, top_p=1.0)
    request = get_dialect("tgi").build_request(model("tgi"), conversation)
    assert request.json == {"inputs": "hi", "stream": True, "parameters": {"details": True}}


def test_anthropic_request() -> None:
    request = get_dialect("anthropic").build_request(model("anthropic"), CONVERSATION)
    assert request.path == "/v1/messages"
    assert request.headers == {"x-api-key": "sk-key", "anthropic-version": "2023-06-01"}
    assert request.json == {
        "model": "up-model",
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
        "max_tokens": 50,
        "stream": True,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
    }


def test_anthropic_request_without_max_tokens_sends_the_configured_ceiling() -> None:
    conversation = Conversation(messages=(Message("user", "hi"),))
    request = get_dialect("anthropic").build_request(model("anthropic"), conversation)
    assert request.json["max_tokens"] == 1000


# Each API's last word on why it stopped: a length limit, in its own vocabulary (issue 13).
FINISHES: dict[str, tuple[bytes, str]] = {
    "openai": (sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}), "length"),
    "openai-completions": (
        sse({"choices": [{"text": "", "index": 0, "finish_reason": "length"}]}),
        "length",
    ),
    "ollama": (b'{"message":{"content":""},"done":true,"done_reason":"length"}\n', "length"),
    "tgi": (
        sse({"generated_text": "", "details": {"finish_reason": "length"}}, space=False),
        "length",
    ),
    "anthropic": (
        sse({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}, "message_delta"),
        "max_tokens",
    ),
}


@pytest.mark.parametrize("dialect", STREAMS)
def test_the_parser_reports_why_the_upstream_stopped(dialect: str) -> None:
    parser = get_dialect(dialect).parser(1_048_576)
    assert parser.finish_reason is None
    body, reason = FINISHES[dialect]
    assert parser.feed(body) == ([], None)
    assert parser.finish_reason == reason
