"""Tool calls, images and structured output on POST /v1/chat/completions (issue 27, SPEC §5h),
read by OpenAI's Python SDK over real sockets, for every dialect that has them; the fake
upstream records what it was sent, so the translation is asserted both ways."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from proxy.fake_upstream import (
    tool_answer_text,
    tool_call_arguments,
    tool_call_id,
    tool_call_input,
)
from tests.servers import FakeUpstreamServer, ProxyServer
from tests.test_completions import async_client, sync_client, user
from tests.test_models import MODELS

TOOL_MODELS = {"chat": "openai", "claude": "anthropic", "llama": "ollama"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
PNG = "data:image/png;base64,iVBORw0KGgo="


def expected_id(model: str, index: int, got: str) -> str:
    """The upstream's id where it gave one; a unique one the proxy made where not (ollama)."""
    given = tool_call_id(TOOL_MODELS[model], index)
    return given if given is not None else got


def same_arguments(model: str, got: str, prompt: str, index: int) -> bool:
    """Exactly the upstream's text; Ollama sends an object, relayed as its JSON."""
    if TOOL_MODELS[model] == "ollama":
        return bool(orjson.loads(got) == tool_call_input(prompt, index))
    return got == tool_call_arguments(prompt, index)


def read_all(client: openai.OpenAI, model: str, prompt: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=user(prompt), tools=[WEATHER], stream=True
    )
    for _ in stream:
        pass


# --- streamed calls ------------------------------------------------------------------------


@pytest.mark.parametrize("calls", [1, 2])
@pytest.mark.parametrize("model", TOOL_MODELS)
def test_streamed_calls_accumulate_exactly_for_every_dialect(
    every_model: ProxyServer, marker: str, model: str, calls: int
) -> None:
    prompt = f"{marker} @call={calls} @arg_split=3 @split=5"
    with sync_client(every_model) as client:
        stream = client.chat.completions.create(
            model=model, messages=user(prompt), tools=[WEATHER, TIME], stream=True
        )
        chunks = [chunk for chunk in stream if chunk.choices]
    accumulated: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls or ():
            call = accumulated.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            assert piece.function is not None
            if piece.id:  # the first piece of a call, once
                assert not call["id"]
                assert piece.type == "function"
                call["id"] = piece.id
                call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""
    assert sorted(accumulated) == list(range(calls))
    for index, call in accumulated.items():
        assert call["id"] == expected_id(model, index, call["id"])
        assert call["name"] == ("get_weather", "get_time")[index]
        assert same_arguments(model, call["arguments"], prompt, index)
    assert len({call["id"] for call in accumulated.values()}) == calls
    assert chunks[-1].choices[0].finish_reason == "tool_calls"  # Ollama's "stop" too


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_the_sdks_stream_helper_gets_each_call_whole(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=2 @text_before_call=1"
    with (
        sync_client(every_model) as client,
        client.chat.completions.stream(
            model=model, messages=user(prompt), tools=[WEATHER, TIME]
        ) as stream,
    ):
        done = [event for event in stream if event.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert [call.function.name for call in message.tool_calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    for index, call in enumerate(message.tool_calls):
        assert same_arguments(model, call.function.arguments, prompt, index)  # type: ignore[union-attr]
    assert [event.index for event in done] == [0, 1]
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_the_results_sent_back_get_the_final_answer_in_the_dialects_shape(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=2"
    with sync_client(every_model) as client:
        first = client.chat.completions.create(
            model=model, messages=user(prompt), tools=[WEATHER, TIME]
        )
        calls = first.choices[0].message.tool_calls
        assert calls is not None
        assert len(calls) == 2
        messages: list[Any] = [
            *user(prompt),
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "18 °C"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "noon"},
        ]
        second = client.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER, TIME], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in second if chunk.choices)
    assert text == tool_answer_text(["18 °C", "noon"])
    sent = upstream.find(marker)[-1].json
    results = [calls[0].id, calls[1].id]
    if TOOL_MODELS[model] == "anthropic":  # the results in one user turn, after the tool_use
        assistant, turn = sent["messages"][-2:]
        assert [b["id"] for b in assistant["content"] if b["type"] == "tool_use"] == results
        assert [b["tool_use_id"] for b in turn["content"]] == results
    elif TOOL_MODELS[model] == "ollama":  # Ollama's results name their function, not an id
        names = [m.get("tool_name") for m in sent["messages"][-2:]]
        assert names == ["get_weather", "get_time"]
        assert [m["role"] for m in sent["messages"][-2:]] == ["tool", "tool"]
    else:
        assert [m["tool_call_id"] for m in sent["messages"][-2:]] == results
        assert [m["role"] for m in sent["messages"][-2:]] == ["tool", "tool"]


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_not_streamed_the_message_has_its_calls_whole(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=2"
    async with async_client(every_model) as client:
        completion = await client.chat.completions.create(
            model=model, messages=user(prompt), tools=[WEATHER, TIME]
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    for index, call in enumerate(choice.message.tool_calls):
        assert call.type == "function"
        assert same_arguments(model, call.function.arguments, prompt, index)  # type: ignore[union-attr]


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_a_failure_inside_a_calls_arguments_raises_in_the_sdk(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=1 @arg_split=2 @fault=drop-mid @after=3"
    # Ollama sends a call whole: its line never came, so the failure is a 502 before any part.
    with sync_client(every_model) as client, pytest.raises(openai.APIError) as raised:
        read_all(client, model, prompt)
    assert "dropped" in str(raised.value.message) or "upstream" in str(raised.value.message)


# --- the request, per dialect --------------------------------------------------------------


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_an_image_reaches_each_dialect_in_its_own_shape(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str, model: str
) -> None:
    content = [
        {"type": "text", "text": f"{marker} what is it?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    with sync_client(every_model) as client:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    message = upstream.find(marker)[-1].json["messages"][-1]
    dialect = TOOL_MODELS[model]
    if dialect == "openai":
        assert message["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
    elif dialect == "anthropic":
        source = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
        assert message["content"][0] == {"type": "image", "source": source}
    else:
        assert message["images"] == ["iVBORw0KGgo="]


@pytest.mark.parametrize(
    ("model", "fields", "param"),
    [
        ("llama", {"image": "https://example.com/cat.png"}, "messages.[0].content"),
        ("legacy", {"tools": [WEATHER]}, "tools"),
        ("hf", {"image": PNG}, "messages.[0].content"),
        ("claude", {"response_format": {"type": "json_object"}}, "response_format"),
        ("llama", {"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
    ],
)
def test_what_a_models_dialect_cannot_carry_is_a_400_naming_the_field_and_dialect(
    every_model: ProxyServer,
    upstream: FakeUpstreamServer,
    marker: str,
    model: str,
    fields: dict[str, Any],
    param: str,
) -> None:
    content: Any = marker
    if "image" in fields:
        image = {"type": "image_url", "image_url": {"url": fields.pop("image")}}
        content = [{"type": "text", "text": marker}, image]
    with (
        sync_client(every_model) as client,
        pytest.raises(openai.BadRequestError) as raised,
    ):
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], extra_body=fields
        )
    body: Any = raised.value.body
    assert body["param"] == param
    assert body["code"] == "unsupported_parameter"
    assert f"the {MODELS[model][0]} dialect" in body["message"]
    assert upstream.find(marker) == []


@pytest.mark.parametrize("model", ["chat", "llama"])
def test_a_json_answer_is_asked_for_in_the_dialects_words(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str, model: str
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    answer = {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    with sync_client(every_model) as client:
        client.chat.completions.create(model=model, messages=user(marker), response_format=answer)  # type: ignore[arg-type]
    sent = upstream.find(marker)[-1].json
    if model == "chat":
        assert sent["response_format"] == answer
    else:
        assert sent["format"] == schema


async def test_open_webuis_native_tool_calling_request_streams_a_call_back(
    every_model: ProxyServer, marker: str
) -> None:
    """As Open WebUI sends it with a tool on: its tools, tool_choice, stream_options and its
    own fields."""
    body = {
        "model": "chat",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [{"type": "text", "text": f"{marker} @call=1"}]},
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "chat_id": "c-1",
        "id": "m-1",
        "session_id": "s-1",
        "features": {"web_search": False},
        "metadata": {"user_id": "u"},
    }
    async with httpx.AsyncClient(base_url=every_model.url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]".removeprefix("data: ")
    chunks = [orjson.loads(event) for event in events[:-1]]
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
    first = next(call for call in calls if call)[0]
    assert first["function"]["name"] == "get_weather"
    assert first["id"] == "call_fake_0"
