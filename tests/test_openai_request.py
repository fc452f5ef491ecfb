"""OpenAI's Chat Completions request as the proxy's Conversation (proxy/openai_request.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.conversation import Message
from proxy.errors import UnsupportedParameter
from proxy.openai_request import ChatCompletionRequest
from tests.splits import token_text

roles = st.sampled_from(["system", "developer", "user", "assistant"])
# A message's content: a string, or text parts (with keys the proxy ignores).
contents = st.one_of(
    token_text,
    st.lists(
        st.builds(
            lambda text, marked: (
                {"type": "text", "text": text}
                | ({"cache_control": {"type": "ephemeral"}} if marked else {})
            ),
            token_text,
            st.booleans(),
        ),
        max_size=4,
    ),
)


def text_of(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


@given(st.lists(st.tuples(roles, contents), min_size=1, max_size=6))
def test_every_text_message_reaches_the_conversation_in_order(
    messages: list[tuple[str, str | list[dict[str, Any]]]],
) -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": role, "content": c} for role, c in messages]}
    )
    assert body.conversation().messages == tuple(
        Message("system" if role == "developer" else role, text_of(c))  # type: ignore[arg-type]
        for role, c in messages
    )
    assert body.prompt_chars() == sum(len(text_of(c)) for _, c in messages)


@pytest.mark.parametrize(
    ("fields", "max_tokens", "stop"),
    [
        ({"max_tokens": 7}, 7, None),
        ({"max_completion_tokens": 9, "max_tokens": 7}, 9, None),
        ({"stop": "END"}, None, ("END",)),
        ({"stop": ["a", "b"]}, None, ("a", "b")),
    ],
)
def test_options_map_onto_the_conversation(
    fields: dict[str, Any], max_tokens: int | None, stop: tuple[str, ...] | None
) -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )
    conversation = body.conversation()
    assert (body.max_tokens, conversation.max_tokens, conversation.stop) == (
        max_tokens,
        max_tokens,
        stop,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": "none"},
        {"tool_choice": "auto"},
        {"tools": []},
        {"response_format": {"type": "text"}},
        {"n": 1},
        {"logprobs": False},
        {"modalities": ["text"]},
        {"user": {"id": "u1", "name": "Ada"}},  # Open WebUI's pipelines
        {"seed": 1, "frequency_penalty": 0.5, "parallel_tool_calls": False, "chat_id": "c"},
    ],
)
def test_asking_for_nothing_beyond_text_is_accepted(fields: dict[str, Any]) -> None:
    ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_the_first_field_beyond_text_is_the_one_named() -> None:
    with pytest.raises(UnsupportedParameter) as raised:
        ChatCompletionRequest.model_validate(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "user", "content": [{"type": "input_audio"}]},
                ],
            }
        )
    assert raised.value.param == "messages.[1].content.[0].type"
    assert raised.value.status_code == 400


def test_completion_ids_are_openais_and_new_each_time() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    first, second = body.response_message_id(), body.response_message_id()
    assert first.startswith("chatcmpl-")
    assert first != second
    assert body.resume_id("client-id") is None


def test_null_for_any_optional_field_is_its_default() -> None:
    # OpenAI's API takes null for every optional field, and clients send it (a form whose
    # value was cleared, a wrapper that writes every key): null asks for nothing.
    fields = (
        "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
        "top_p", "stop", "user", "n", "tools", "functions", "tool_choice", "function_call",
        "response_format", "logprobs", "modalities", "audio",
    )  # fmt: skip
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "name": None}],
            **dict.fromkeys(fields),
        }
    )
    assert not body.stream
    assert not body.include_usage
    assert (
        body.conversation()
        == ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        ).conversation()
    )
    options = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    nulls = ChatCompletionRequest.model_validate(
        {**options, "stream_options": {"include_usage": None}}
    )
    assert not nulls.include_usage
