"""POST /v1/responses read by OpenAI's Python SDK over real sockets, for every dialect (issue
28, SPEC §5i): `client.responses.create(stream=True)`, the stream helper
`client.responses.stream()` (strict about the events' order and ids), and the whole response;
reasoning as a reasoning item's summary, function calls as `function_call` items and the tool
loop over two requests; failures, the stop at max_output_tokens, and every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from proxy.fake_upstream import reasoning_text, reply_text, tool_answer_text
from tests.servers import FakeUpstreamServer, ProxyServer
from tests.test_completions import async_client, sync_client
from tests.test_completions_reasoning import THINKING_MODELS
from tests.test_models import MODELS
from tests.test_tools import TOOL_MODELS, expected_id, same_arguments

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def streamed(client: openai.OpenAI, model: str, prompt: Any, **fields: Any) -> list[Any]:
    return list(client.responses.create(model=model, input=prompt, stream=True, **fields))


def streamed_lazily(client: openai.OpenAI, model: str, prompt: str) -> Iterator[Any]:
    yield from client.responses.create(model=model, input=prompt, stream=True)


def joined(events: list[Any], kind: str) -> str:
    return "".join(event.delta for event in events if event.type == kind)


def item_types(response: Response) -> list[str]:
    return [item.type for item in response.output]


# --- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("split", [1, 7])
def test_create_streams_the_exact_text_with_consecutive_sequence_numbers(
    every_model: ProxyServer, marker: str, model: str, split: int
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20 @split={split}"
    with sync_client(every_model) as client:
        events = streamed(client, model, prompt)
    assert joined(events, "response.output_text.delta") == reply_text(prompt, 20)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.type for event in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == reply_text(prompt, 20)
    assert events[-1].response.store is False


@pytest.mark.parametrize("model", MODELS)
def test_the_stream_helper_reads_the_text_and_its_final_response_matches(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20 @split=3"
    with (
        sync_client(every_model) as client,
        client.responses.stream(model=model, input=prompt) as stream,
    ):
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == reply_text(prompt, 20)
    assert final.status == "completed"
    assert final.model == model


@pytest.mark.parametrize("model", MODELS)
async def test_not_streamed_the_response_has_the_same_output(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20"
    async with async_client(every_model) as client:
        response = await client.responses.create(model=model, input=prompt)
    assert response.output_text == reply_text(prompt, 20)
    assert item_types(response) == ["message"]
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


# --- reasoning -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", THINKING_MODELS)
def test_reasoning_streams_as_the_summary_of_a_reasoning_item(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @split=7"
    with (
        sync_client(every_model) as client,
        client.responses.stream(model=model, input=prompt) as stream,
    ):
        events: list[ResponseStreamEvent] = list(stream)
        final = stream.get_final_response()
    assert joined(events, "response.reasoning_summary_text.delta") == reasoning_text(prompt, 9)
    assert joined(events, "response.output_text.delta") == reply_text(prompt, 20)
    assert item_types(final) == ["reasoning", "message"]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert [part.text for part in reasoning.summary] == [reasoning_text(prompt, 9)]


def test_the_reasoning_effort_asks_the_dialect_for_thoughts(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @tokens=5"
    with sync_client(every_model) as client:
        response = client.responses.create(model="chat", input=prompt, reasoning={"effort": "low"})
    assert upstream.find(marker)[-1].json["reasoning_effort"] == "low"
    assert response.reasoning is not None
    assert response.reasoning.effort == "low"
    assert item_types(response) == ["reasoning", "message"]  # the fake thinks when asked


# --- function calls ------------------------------------------------------------------------


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_a_function_call_arrives_whole_and_its_output_gets_the_final_answer(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=2 @arg_split=3 @split=5"
    with (
        sync_client(every_model) as client,
        client.responses.stream(model=model, input=prompt, tools=[WEATHER, TIME]) as stream,  # type: ignore[list-item]
    ):
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        first = stream.get_final_response()
    calls = [item for item in first.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["get_weather", "get_time"]
    for index, call in enumerate(calls):
        assert call.call_id == expected_id(model, index, call.call_id)
        assert same_arguments(model, call.arguments, prompt, index)
    assert [event.arguments for event in done] == [call.arguments for call in calls]
    outputs = [
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 °C"},
        {"type": "function_call_output", "call_id": calls[1].call_id, "output": "noon"},
    ]
    history: list[Any] = [{"role": "user", "content": prompt}]
    history += [call.model_dump(exclude_none=True) for call in calls]
    with sync_client(every_model) as client:
        second = client.responses.create(
            model=model,
            input=history + outputs,
            tools=[WEATHER, TIME],  # type: ignore[list-item]
        )
    assert second.output_text == tool_answer_text(["18 °C", "noon"])


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_not_streamed_the_calls_are_function_call_items(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @think=3 @call=1 @text_before_call=1"
    async with async_client(every_model) as client:
        response = await client.responses.create(model=model, input=prompt, tools=[WEATHER])  # type: ignore[list-item]
    assert item_types(response) == ["reasoning", "message", "function_call"]
    call = response.output[2]
    assert call.type == "function_call"
    assert same_arguments(model, call.arguments, prompt, 0)
    assert response.output_text == "Let me check."
    assert len({item.id for item in response.output}) == 3


# --- endings -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_a_failure_mid_stream_raises_in_the_sdk(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=12 @fault=drop-mid @after=4"
    seen: list[str] = []
    with sync_client(every_model) as client, pytest.raises(openai.APIError) as raised:
        seen.extend(event.type for event in streamed_lazily(client, model, prompt))
    assert "response.output_text.delta" in seen
    assert "dropped" in raised.value.message


def test_after_the_error_event_comes_response_failed_and_nothing_else(
    every_model: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @fault=drop-mid @after=3"
    body = {"model": "chat", "input": prompt, "stream": True}
    reply = httpx.post(f"{every_model.url}/v1/responses", json=body, timeout=20)
    events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    last_two = [httpx.Response(200, content=data).json() for data in events[-2:]]
    assert [event["type"] for event in last_two] == ["error", "response.failed"]
    assert last_two[0]["error"]["message"] == last_two[0]["message"]
    assert last_two[1]["response"]["status"] == "failed"
    assert last_two[1]["response"]["output"][0]["status"] == "incomplete"


def test_a_failure_not_streamed_is_a_502(every_model: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @fault=drop-mid @after=4"
    with sync_client(every_model) as client, pytest.raises(openai.APIStatusError) as raised:
        client.responses.create(model="chat", input=prompt)
    assert raised.value.status_code == 502


@pytest.mark.parametrize("model", ["chat", "claude", "llama"])
def test_stopping_at_max_output_tokens_is_response_incomplete(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @tokens=20"
    with sync_client(every_model) as client:
        events = streamed(client, model, prompt, max_output_tokens=3)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == reply_text(prompt, 3)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"tools": [{"type": "web_search"}]}, "tools.[0].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools.[0].type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools.[0].type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input.[0].content.[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input.[0].content.[0].file_id",
        ),
    ],
)
def test_what_needs_state_or_openais_platform_is_a_400_naming_the_field(
    every_model: ProxyServer,
    upstream: FakeUpstreamServer,
    marker: str,
    fields: dict[str, Any],
    param: str,
) -> None:
    body = {"model": "chat", "input": marker, **fields}
    with (
        sync_client(every_model) as client,
        pytest.raises(openai.BadRequestError) as raised,
    ):
        client.post("/responses", cast_to=Response, body=body)
    error: Any = raised.value.body
    assert error["param"] == param
    assert error["message"].startswith(param)
    assert error["code"] == "unsupported_parameter"
    assert upstream.find(marker) == []


def test_a_reference_to_reasoning_is_not_relayed_as_a_reasoning_item_is_not(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": marker}]},
        {"type": "item_reference", "id": "rs_0"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
        {"role": "user", "content": f"{marker} again"},
    ]
    with sync_client(every_model) as client:
        client.responses.create(model="chat", input=items, store=True)  # type: ignore[arg-type]
    sent = upstream.find(marker)[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", marker),
        ("assistant", "Hi."),
        ("user", f"{marker} again"),
    ]


def test_tools_for_a_dialect_without_them_are_a_400_naming_the_dialect(
    every_model: ProxyServer, marker: str
) -> None:
    with (
        sync_client(every_model) as client,
        pytest.raises(openai.BadRequestError) as raised,
    ):
        client.responses.create(model="hf", input=marker, tools=[WEATHER])  # type: ignore[list-item]
    error: Any = raised.value.body
    assert error["param"] == "tools"
    assert "the tgi dialect" in error["message"]


def test_an_unknown_model_is_openais_404(every_model: ProxyServer, marker: str) -> None:
    with sync_client(every_model) as client, pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="nope", input=marker)
    error: Any = raised.value.body
    assert error["param"] == "model"


def test_instructions_and_images_reach_the_upstream(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    content = [{"type": "input_text", "text": marker}, {"type": "input_image", "image_url": png}]
    with sync_client(every_model) as client:
        response = client.responses.create(
            model="chat",
            instructions="Be brief.",
            input=[{"role": "user", "content": content}],  # type: ignore[list-item]
            text={"format": {"type": "json_object"}},
        )
    assert response.instructions == "Be brief."
    sent = upstream.find(marker)[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": png}}
    assert sent["response_format"] == {"type": "json_object"}
