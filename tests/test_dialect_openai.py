"""The openai adapter: request shape, and text for any split of the upstream bytes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from proxy.conversation import Conversation, Message
from proxy.dialects.openai import OpenAIChat
from proxy.errors import UpstreamProtocolError
from proxy.settings import ModelSpec
from tests.splits import cuts, split_at, token_text

MODEL = ModelSpec(
    name="gpt",
    dialect="openai",
    urls=("http://upstream",),
    api_key=SecretStr("sk-key"),
    upstream_model="gpt-4o-mini",
    max_tokens=4096,
)


def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
    payload = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def openai_stream(tokens: list[str]) -> bytes:
    return (
        b": keep-alive\n\n"
        + chunk({"role": "assistant", "content": ""})
        + b"".join(chunk({"content": token}) for token in tokens)
        + chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )


def parse(pieces: list[bytes]) -> tuple[str, bool]:
    parser = OpenAIChat().parser()
    text = "".join(parser.feed(piece) for piece in pieces) + parser.close()
    return text, parser.complete


@given(st.lists(token_text, max_size=30), cuts)
def test_any_split_gives_the_same_text(tokens: list[str], cut_points: list[int]) -> None:
    stream = openai_stream(tokens)
    assert parse(split_at(stream, cut_points)) == ("".join(tokens), True)


def test_multibyte_characters_split_at_every_byte() -> None:
    tokens = ["é", "世界", "🙂", "\u2028", "𝄞"]
    stream = openai_stream(tokens).replace(b"\n", b"\r\n")
    for point in range(len(stream) + 1):
        assert parse([stream[:point], stream[point:]]) == ("".join(tokens), True)


def test_stream_without_done_or_finish_reason_is_incomplete() -> None:
    text, complete = parse([chunk({"content": "partial"})])
    assert (text, complete) == ("partial", False)


def test_finish_reason_alone_completes_the_stream() -> None:
    assert parse([chunk({"content": "a"}), chunk({}, "length")]) == ("a", True)


def test_in_band_error_is_a_failure_not_text() -> None:
    parser = OpenAIChat().parser()
    with pytest.raises(UpstreamProtocolError, match="overloaded"):
        parser.feed(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n')


def test_malformed_event_is_a_failure() -> None:
    with pytest.raises(UpstreamProtocolError):
        OpenAIChat().parser().feed(b"data: {not json\n\n")


def test_request_shape() -> None:
    conversation = Conversation(
        messages=(Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")),
        system="be brief",
        max_tokens=50,
        temperature=0.2,
        stop=("END",),
    )
    request = OpenAIChat().build_request(MODEL, conversation)
    assert request.path == "/v1/chat/completions"
    assert request.headers == {"Authorization": "Bearer sk-key"}
    assert request.json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
        "stream": True,
        "max_tokens": 50,
        "temperature": 0.2,
        "stop": ["END"],
    }


def test_sampling_fields_are_sent_only_when_given() -> None:
    request = OpenAIChat().build_request(MODEL, Conversation(messages=(Message("user", "hi"),)))
    assert set(request.json) == {"model", "messages", "stream"}
