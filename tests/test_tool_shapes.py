"""Each dialect's request for tools, images and structured output (issue 27, SPEC §5h), and
what each dialect says it cannot carry."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.conversation import (
    Conversation,
    ForcedTool,
    Image,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
)
from proxy.dialects import get_dialect
from tests.test_dialects import model

PNG = "data:image/png;base64,iVBORw0KGgo="
LINK = "https://example.com/cat.jpg"
WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {}})
LOOP = Conversation(
    messages=(
        Message("user", "Weather in Paris and Rome?", (Image(PNG, "low"),)),
        Message(
            "assistant",
            "Let me check.",
            tool_calls=(
                ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
                ToolCall("call_2", "get_weather", '{"city": "Rome"}'),
            ),
        ),
        Message("tool", "18 °C", tool_call_id="call_1"),
        Message("tool", "24 °C", tool_call_id="call_2"),
        Message("user", "Thanks!"),
    ),
    system="Be brief",
    max_tokens=100,
    tools=(WEATHER,),
    tool_choice="auto",
    parallel_tool_calls=False,
)


def body_of(dialect: str, conversation: Conversation) -> dict[str, Any]:
    return get_dialect(dialect).build_request(model(dialect), conversation).json  # type: ignore[arg-type]


def test_openai_gets_the_loop_as_a_client_of_openai_sends_it() -> None:
    body = body_of("openai", LOOP)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "24 °C"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("auto", False)


def test_anthropic_gets_tool_use_blocks_and_the_results_in_one_user_turn() -> None:
    body = body_of("anthropic", LOOP)
    assert body["system"] == "Be brief"
    user, assistant, results = body["messages"]
    assert user == {
        "role": "user",
        "content": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
            {"type": "text", "text": "Weather in Paris and Rome?"},
        ],
    }
    assert assistant["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18 °C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "24 °C"},
            {"type": "text", "text": "Thanks!"},
        ],
    }
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (ForcedTool("get_weather"), {"type": "tool", "name": "get_weather"}),
    ],
)
def test_anthropic_tool_choice(choice: Any, expected: dict[str, str]) -> None:
    conversation = Conversation(
        messages=(Message("user", "hi"),), tools=(WEATHER,), tool_choice=choice
    )
    assert body_of("anthropic", conversation)["tool_choice"] == expected


def test_anthropic_takes_an_image_link_as_a_url_source() -> None:
    conversation = Conversation(messages=(Message("user", "What is it?", (Image(LINK),)),))
    (message,) = body_of("anthropic", conversation)["messages"]
    assert message["content"][0] == {"type": "image", "source": {"type": "url", "url": LINK}}


def test_ollama_gets_calls_as_objects_results_named_and_images_as_base64() -> None:
    body = body_of("ollama", LOOP)
    system, user, assistant, first, second, thanks = body["messages"]
    assert system == {"role": "system", "content": "Be brief"}
    assert second == {"role": "tool", "content": "24 °C", "tool_name": "get_weather"}
    assert thanks == {"role": "user", "content": "Thanks!"}
    assert user == {
        "role": "user",
        "content": "Weather in Paris and Rome?",
        "images": ["iVBORw0KGgo="],
    }
    assert assistant["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
    ]
    assert first == {"role": "tool", "content": "18 °C", "tool_name": "get_weather"}
    assert body["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("answer", "openai", "ollama"),
    [
        (ResponseFormat("json_object"), {"type": "json_object"}, "json"),
        (
            ResponseFormat("json_schema", "weather", {"type": "object"}, True),
            {
                "type": "json_schema",
                "json_schema": {"name": "weather", "schema": {"type": "object"}, "strict": True},
            },
            {"type": "object"},
        ),
    ],
)
def test_a_structured_answer_for_openai_and_ollama(
    answer: ResponseFormat, openai: dict[str, Any], ollama: object
) -> None:
    conversation = Conversation(messages=(Message("user", "hi"),), response_format=answer)
    assert body_of("openai", conversation)["response_format"] == openai
    assert body_of("ollama", conversation)["format"] == ollama


def test_tool_choice_none_leaves_the_tools_out_for_ollama() -> None:
    conversation = Conversation(
        messages=(Message("user", "hi"),), tools=(WEATHER,), tool_choice="none"
    )
    assert "tools" not in body_of("ollama", conversation)


@pytest.mark.parametrize(
    ("dialect", "conversation", "field"),
    [
        ("openai-completions", LOOP, "tools"),
        ("tgi", LOOP, "tools"),
        (
            "tgi",
            Conversation(messages=(Message("user", "hi", (Image(PNG),)),)),
            "messages.[0].content",
        ),
        (
            "ollama",
            Conversation(messages=(Message("user", "hi", (Image(LINK),)),)),
            "messages.[0].content",
        ),
        (
            "ollama",
            Conversation(
                messages=(Message("user", "hi"),), tools=(WEATHER,), tool_choice="required"
            ),
            "tool_choice",
        ),
        (
            "anthropic",
            Conversation(
                messages=(Message("user", "hi"),), response_format=ResponseFormat("json_object")
            ),
            "response_format",
        ),
        (
            "openai-completions",
            Conversation(messages=(Message("tool", "4", tool_call_id="c"),)),
            "messages.[0].role",
        ),
    ],
)
def test_what_a_dialect_cannot_carry_is_named(
    dialect: str, conversation: Conversation, field: str
) -> None:
    beyond = conversation.beyond(get_dialect(dialect).capabilities)
    assert beyond is not None
    assert beyond[0] == field


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "ollama"])
def test_the_whole_loop_is_within_what_the_tool_dialects_carry(dialect: str) -> None:
    assert LOOP.beyond(get_dialect(dialect).capabilities) is None
