"""A reply that calls tools: the calls in each API's own wire shape (one, two in parallel,
arguments in fragments), the answer once the results come back, the prompt found past them,
images that break nothing, and faults, pace and usage as a text reply has them."""

from __future__ import annotations

import base64
import itertools
import json
import time
from typing import Any

import httpx
import orjson
import pytest

from proxy.fake_upstream import (
    TEXT_BEFORE_CALL,
    Directives,
    RecordingFakeUpstream,
    reply_text,
    tool_answer_text,
    tool_call_arguments,
    tool_call_fragments,
    tool_call_id,
    tool_call_input,
)
from tests.fake_upstream.readers import (
    CHAT,
    DIALECTS,
    TOKENS,
    dechunk,
    raw_exchange,
    raw_post,
    without_head,
)

ANTHROPIC, OLLAMA = DIALECTS["anthropic"], DIALECTS["ollama"]
TOOL_CAPABLE = ["openai", "anthropic", "ollama"]
NAMES = ["get_weather", "get_time"]


def tools(name: str, names: list[str] = NAMES) -> list[dict[str, Any]]:
    """Tool definitions in the API's own shape."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    if name == "anthropic":
        return [{"name": tool, "description": "d", "input_schema": schema} for tool in names]
    return [
        {"type": "function", "function": {"name": tool, "description": "d", "parameters": schema}}
        for tool in names
    ]


def request(name: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {**DIALECTS[name].request(prompt), "tools": tools(name), **extra}


async def send(client: httpx.AsyncClient, name: str, body: dict[str, Any]) -> httpx.Response:
    response = await client.post(DIALECTS[name].path, json=body)
    assert response.status_code == 200
    return response


def calls_of(name: str, body: bytes) -> list[tuple[str | None, str, str]]:
    """(id, name, arguments) of every call in a reply, accumulated as a client of that API
    does: by index (openai), by block (anthropic), whole (ollama, arguments re-serialised)."""
    found: dict[int, list[Any]] = {}
    for event in DIALECTS[name].events(body):
        if name == "openai" and event != "[DONE]" and event["choices"]:
            for delta in event["choices"][0]["delta"].get("tool_calls", []):
                call = found.setdefault(delta["index"], [None, "", ""])
                call[0] = delta.get("id", call[0])
                call[1] += delta["function"].get("name", "")
                call[2] += delta["function"].get("arguments", "")
        elif name == "anthropic" and event["type"] == "content_block_start":
            block = event["content_block"]
            if block["type"] == "tool_use":
                found[event["index"]] = [block["id"], block["name"], ""]
        elif name == "anthropic" and event["type"] == "content_block_delta":
            if event["delta"]["type"] == "input_json_delta":
                found[event["index"]][2] += event["delta"]["partial_json"]
        elif name == "ollama":
            for call in event["message"].get("tool_calls", []):
                function = function_of(call)
                arguments = orjson.dumps(function["arguments"]).decode()
                found[len(found)] = [None, function["name"], arguments]
    return [(found[i][0], found[i][1], found[i][2]) for i in sorted(found)]


def function_of(call: dict[str, Any]) -> dict[str, Any]:
    assert set(call) == {"function"}  # no id, as Ollama sends none
    function: dict[str, Any] = call["function"]
    return function


def expected_calls(name: str, prompt: str, count: int) -> list[tuple[str | None, str, str]]:
    return [
        (tool_call_id(name, index), NAMES[index], tool_call_arguments(prompt, index))
        for index in range(count)
    ]


def openai_deltas(body: bytes) -> list[dict[str, Any]]:
    events = CHAT.events(body)
    return [event["choices"][0]["delta"] for event in events[:-1] if event["choices"]]


def openai_finish(body: bytes) -> str:
    events = [event for event in CHAT.events(body)[:-1] if event["choices"]]
    return str(events[-1]["choices"][0]["finish_reason"])


# The arguments, ids and answer tests assert


def test_arguments_are_deterministic_json_with_every_utf8_length_and_escapes() -> None:
    arguments = tool_call_arguments("hi", 0)
    assert arguments == tool_call_arguments("hi", 0)
    assert json.loads(arguments) == tool_call_input("hi", 0)
    assert orjson.dumps(tool_call_input("hi", 0)).decode() == arguments
    assert {len(char.encode()) for char in arguments} == {1, 2, 3, 4}
    assert '\\"' in arguments
    assert "\\\\" in arguments
    assert tool_call_input("hi", 0)["call"] == 0
    assert tool_call_input("hi", 1)["city"] != tool_call_input("hi", 0)["city"]


def test_fragments_are_arg_split_characters_and_join_to_the_arguments() -> None:
    for prompt, size in (("hi", 7), ("hi @arg_split=3", 3), ("hi @arg_split=0", 7)):
        fragments = tool_call_fragments(prompt, 1)
        assert "".join(fragments) == tool_call_arguments(prompt, 1)
        assert {len(fragment) for fragment in fragments[:-1]} == {size}
        assert 0 < len(fragments[-1]) <= size


def test_ids_are_each_apis_own_and_ollama_has_none() -> None:
    assert [tool_call_id("openai", i) for i in (0, 1)] == ["call_fake_0", "call_fake_1"]
    assert [tool_call_id("anthropic", i) for i in (0, 1)] == ["toolu_fake_0", "toolu_fake_1"]
    assert tool_call_id("ollama", 0) is None


def test_the_answer_to_results_names_them_in_order() -> None:
    assert tool_answer_text(["sunny, 21 °C", "12:00"]) == "Tool results: sunny, 21 °C | 12:00"


def test_call_directives_parse_and_malformed_ones_keep_their_defaults() -> None:
    parsed = Directives.parse("@call=2 @text_before_call=1 @arg_split=3", tokens=1, delay=0)
    assert (parsed.call, parsed.text_before_call, parsed.arg_split) == (2, True, 3)
    parsed = Directives.parse("@call=x @text_before_call=yes @arg_split=0", tokens=1, delay=0)
    assert (parsed.call, parsed.text_before_call, parsed.arg_split) == (0, False, 7)


# Each API's wire shape


async def test_openai_streams_a_call_as_its_opening_chunk_then_argument_fragments(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather? @call=1"
    response = await send(client, "openai", request("openai", prompt))
    opening = {
        "index": 0,
        "id": "call_fake_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    fragments = [
        {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
        for fragment in tool_call_fragments(prompt, 0)
    ]
    assert openai_deltas(response.content) == [
        {"role": "assistant", "content": ""},
        {"tool_calls": [opening]},
        *fragments,
        {},
    ]
    assert openai_finish(response.content) == "tool_calls"
    assert (
        b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":0,"model":"m",'
        b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_fake_0",'
        b'"type":"function","function":{"name":"get_weather","arguments":""}}]},'
        b'"finish_reason":null}]}\n\n' in response.content
    )
    assert (
        b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
        b'{"arguments":"{\\"city\\""}}]},"finish_reason":null}]}\n\n' in response.content
    )
    assert response.content.endswith(
        b'"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n'
    )


async def test_openai_streams_two_parallel_calls_one_after_the_other(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather and time? @call=2"
    response = await send(client, "openai", request("openai", prompt))
    indices = [d["tool_calls"][0]["index"] for d in openai_deltas(response.content)[1:-1]]
    first, second = (len(tool_call_fragments(prompt, i)) + 1 for i in (0, 1))
    assert indices == [0] * first + [1] * second
    assert calls_of("openai", response.content) == expected_calls("openai", prompt, 2)


async def test_anthropic_streams_each_call_as_a_tool_use_block_of_input_json_deltas(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather? @call=1"
    body = (await send(client, "anthropic", request("anthropic", prompt))).content
    assert (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"toolu_fake_0","name":"get_weather",'
        b'"input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"city\\""}}\n\n' in body
    )
    events = ANTHROPIC.events(body)
    fragments = tool_call_fragments(prompt, 0)
    assert events[0]["type"] == "message_start"
    assert events[1:] == [
        {"type": "ping"},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_fake_0",
                "name": "get_weather",
                "input": {},
            },
        },
        *[
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            }
            for fragment in fragments
        ],
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": len(fragments)},
        },
        {"type": "message_stop"},
    ]


async def test_anthropic_puts_the_text_before_the_calls_in_block_0_and_the_calls_after(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather and time? @call=2 @text_before_call=1"
    body = (await send(client, "anthropic", request("anthropic", prompt))).content
    events = ANTHROPIC.events(body)
    starts = [
        (e["index"], e["content_block"]["type"])
        for e in events
        if e["type"] == "content_block_start"
    ]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    assert stops == [0, 1, 2]
    assert ANTHROPIC.read(body) == (TEXT_BEFORE_CALL, True)
    assert calls_of("anthropic", body) == expected_calls("anthropic", prompt, 2)


async def test_anthropic_calls_follow_the_thinking_and_the_text_blocks(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather? @call=1 @think=2 @text_before_call=1"
    events = ANTHROPIC.events(
        (await send(client, "anthropic", request("anthropic", prompt))).content
    )
    starts = [
        (e["index"], e["content_block"]["type"])
        for e in events
        if e["type"] == "content_block_start"
    ]
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use")]


async def test_ollama_sends_the_calls_whole_in_one_line_then_done_with_stop(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather and time? @call=2"
    body = (await send(client, "ollama", request("ollama", prompt))).content
    first = orjson.dumps(tool_call_input(prompt, 0))
    assert body.startswith(
        b'{"model":"m","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant",'
        b'"content":"","tool_calls":[{"function":{"name":"get_weather","arguments":%b}},' % first
    )
    events = OLLAMA.events(body)
    assert events[0] == {
        "model": "m",
        "created_at": "2024-01-01T00:00:00Z",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": NAMES[i], "arguments": tool_call_input(prompt, i)}}
                for i in (0, 1)
            ],
        },
        "done": False,
    }
    assert len(events) == 2
    assert (events[1]["done"], events[1]["done_reason"]) == (True, "stop")


async def test_ollama_says_its_text_before_the_call_line(client: httpx.AsyncClient) -> None:
    prompt = "weather? @call=1 @text_before_call=1"
    body = (await send(client, "ollama", request("ollama", prompt))).content
    assert OLLAMA.read(body) == (TEXT_BEFORE_CALL, True)
    assert "tool_calls" in OLLAMA.events(body)[-2]["message"]
    assert calls_of("ollama", body) == expected_calls("ollama", prompt, 1)


@pytest.mark.parametrize("name", TOOL_CAPABLE)
@pytest.mark.parametrize("count", [1, 2])
async def test_every_byte_split_keeps_ids_names_and_arguments(
    fake: RecordingFakeUpstream, name: str, count: int
) -> None:
    prompt = f"weather? @call={count} @text_before_call=1 @split=1 @arg_split=3"
    response = await raw_exchange(
        fake, raw_post(DIALECTS[name].path, request(name, prompt), close=True)
    )
    sizes, body, _ = dechunk(without_head(response))
    assert set(sizes) == {1}
    assert calls_of(name, body) == expected_calls(name, prompt, count)
    assert DIALECTS[name].read(body) == (TEXT_BEFORE_CALL, True)


@pytest.mark.parametrize("name", TOOL_CAPABLE)
async def test_calls_past_the_tools_a_request_has_go_to_its_first(
    client: httpx.AsyncClient, name: str
) -> None:
    body = request(name, "@call=2", tools=tools(name, ["only"]))
    calls = calls_of(name, (await send(client, name, body)).content)
    assert [tool for _, tool, _ in calls] == ["only", "only"]


@pytest.mark.parametrize("name", TOOL_CAPABLE)
async def test_a_request_without_tools_gets_text_whatever_call_says(
    client: httpx.AsyncClient, name: str
) -> None:
    prompt = "hi @call=1"
    response = await send(client, name, DIALECTS[name].request(prompt))
    assert DIALECTS[name].read(response.content) == (reply_text(prompt, TOKENS), True)
    assert calls_of(name, response.content) == []


@pytest.mark.parametrize("name", ["openai-completions", "tgi"])
async def test_apis_without_tools_ignore_call_and_send_the_text(
    client: httpx.AsyncClient, name: str
) -> None:
    prompt = "hi @call=1"
    body = {**DIALECTS[name].request(prompt), "tools": tools("openai")}
    response = await send(client, name, body)
    assert DIALECTS[name].read(response.content) == (reply_text(prompt, TOKENS), True)


# The answer once the results come back

RESULTS = ["sunny, 21 °C in Zürich", "12:00 🕛"]


def with_results(name: str, prompt: str) -> dict[str, Any]:
    """A second request: the prompt, the fake's two calls, and their results."""
    body = request(name, prompt)
    user = body["messages"][-1]
    turns: list[dict[str, Any]]
    if name == "anthropic":
        uses: list[dict[str, Any]] = [
            {"type": "tool_use", "id": tool_call_id(name, i), "name": NAMES[i], "input": {}}
            for i in (0, 1)
        ]
        results: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": tool_call_id(name, 0), "content": RESULTS[0]},
            {
                "type": "tool_result",
                "tool_use_id": tool_call_id(name, 1),
                "content": [{"type": "text", "text": RESULTS[1]}],
            },
        ]
        turns = [{"role": "assistant", "content": uses}, {"role": "user", "content": results}]
    else:
        calls: list[dict[str, Any]] = [
            {"id": f"c{i}", "type": "function", "function": {"name": NAMES[i], "arguments": "{}"}}
            for i in (0, 1)
        ]
        assistant = {"role": "assistant", "content": "", "tool_calls": calls}
        tool_turns = [
            {"role": "tool", "tool_call_id": f"c{i}", "content": RESULTS[i]} for i in (0, 1)
        ]
        turns = [assistant, *tool_turns]
    return {**body, "messages": [*body["messages"][:-1], user, *turns]}


@pytest.mark.parametrize("name", TOOL_CAPABLE)
async def test_a_turn_of_tool_results_gets_text_that_names_them_not_another_call(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, name: str
) -> None:
    prompt = "weather and time? @call=2"
    body = with_results(name, prompt)
    response = await send(client, name, body)
    assert DIALECTS[name].read(response.content) == (tool_answer_text(RESULTS), True)
    assert calls_of(name, response.content) == []
    assert fake.records[-1].prompt == prompt
    assert fake.records[-1].json == body
    if name == "openai":
        assert openai_finish(response.content) == "stop"


async def test_the_prompt_is_the_last_user_text_past_tool_result_turns(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient
) -> None:
    prompt = "weather? @call=1 @delay=0.02"
    body = with_results("anthropic", prompt)
    started = time.monotonic()
    response = await send(client, "anthropic", body)
    assert fake.records[-1].prompt == prompt
    words = len(tool_answer_text(RESULTS).split())
    assert time.monotonic() - started >= 0.02 * words * 0.9  # its directives still apply
    assert ANTHROPIC.read(response.content) == (tool_answer_text(RESULTS), True)


async def test_a_user_turn_with_text_after_its_tool_results_is_the_prompt(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient
) -> None:
    body = with_results("anthropic", "first @call=1")
    body["messages"][-1]["content"].append({"type": "text", "text": "and now? @tokens=2"})
    await send(client, "anthropic", body)
    assert fake.records[-1].prompt == "and now? @tokens=2"


async def test_results_followed_by_a_new_question_get_the_usual_reply(
    client: httpx.AsyncClient,
) -> None:
    body = with_results("openai", "weather? @call=1")
    body["messages"].append({"role": "user", "content": "thanks"})
    response = await send(client, "openai", body)
    assert CHAT.read(response.content) == (reply_text("thanks", TOKENS), True)


# Images


def with_image(name: str, prompt: str) -> dict[str, Any]:
    body = DIALECTS[name].request(prompt)
    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n a one-pixel image, near enough").decode()
    if name == "openai":
        content = [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
        ]
    elif name == "anthropic":
        source = {"type": "base64", "media_type": "image/png", "data": pixel}
        content = [{"type": "image", "source": source}, {"type": "text", "text": prompt}]
    else:
        body["messages"][-1]["images"] = [pixel]
        return body
    body["messages"][-1]["content"] = content
    return body


@pytest.mark.parametrize("name", TOOL_CAPABLE)
async def test_images_leave_the_prompt_whole_and_are_recorded(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, name: str
) -> None:
    prompt = "what is this? @text=tricky"
    body = with_image(name, prompt)
    response = await send(client, name, body)
    assert DIALECTS[name].read(response.content) == (reply_text(prompt, TOKENS), True)
    assert fake.records[-1].prompt == prompt
    assert fake.records[-1].json == body


# Faults, pace, usage


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_a_drop_mid_stream_lands_after_after_argument_fragments(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, name: str
) -> None:
    prompt = "weather? @call=1 @text_before_call=1 @fault=drop-mid @after=2"
    with pytest.raises(httpx.RemoteProtocolError):
        await send(client, name, request(name, prompt))
    response = await raw_exchange(fake, raw_post(DIALECTS[name].path, request(name, prompt)))
    body = without_head(response)
    assert not body.endswith(b"0\r\n\r\n")  # no terminating chunk: a broken body
    payload = b"".join(body.split(b"\r\n")[1::2])
    arguments = "".join(tool_call_fragments(prompt, 0)[:2])
    assert calls_of(name, payload) == [(tool_call_id(name, 0), NAMES[0], arguments)]
    assert DIALECTS[name].read(payload)[0] == TEXT_BEFORE_CALL


async def test_ollama_dropped_inside_the_arguments_sends_no_call(
    fake: RecordingFakeUpstream,
) -> None:
    prompt = "weather? @call=1 @fault=drop-mid @after=1"
    response = await raw_exchange(fake, raw_post(OLLAMA.path, request("ollama", prompt)))
    assert b"tool_calls" not in response
    assert not response.endswith(b"0\r\n\r\n")


async def test_an_error_event_inside_the_arguments_ends_the_reply(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather? @call=1 @fault=error-event @after=1"
    response = await send(client, "openai", request("openai", prompt))
    events = CHAT.events(response.content)
    assert events[-1]["error"]["message"] == "fake in-band error"
    assert calls_of("openai", response.content[: response.content.index(b'data: {"error"')]) == [
        ("call_fake_0", NAMES[0], tool_call_fragments(prompt, 0)[0])
    ]


async def test_argument_fragments_are_paced_by_delay(client: httpx.AsyncClient) -> None:
    prompt = "weather? @call=1 @arg_split=20 @delay=0.1"
    times: list[float] = []
    started = time.monotonic()
    async with client.stream("POST", CHAT.path, json=request("openai", prompt)) as response:
        async for line in response.aiter_lines():
            if '"arguments":"' in line and '"arguments":""' not in line:
                times.append(time.monotonic() - started)
    assert len(times) == len(tool_call_fragments(prompt, 0)) >= 3
    assert all(later - earlier >= 0.09 for earlier, later in itertools.pairwise(times))


async def test_usage_counts_one_token_a_fragment_and_the_text_before(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather and time? @call=2 @text_before_call=1"  # five words
    fragments = sum(len(tool_call_fragments(prompt, i)) for i in (0, 1))
    words = len(TEXT_BEFORE_CALL.split())
    body = request("openai", prompt, stream_options={"include_usage": True})
    usage = CHAT.events((await send(client, "openai", body)).content)[-2]["usage"]
    assert usage == {
        "prompt_tokens": 5,
        "completion_tokens": words + fragments,
        "total_tokens": 5 + words + fragments,
    }
    anthropic = ANTHROPIC.events(
        (await send(client, "anthropic", request("anthropic", prompt))).content
    )
    assert anthropic[-2]["usage"] == {"output_tokens": words + fragments}
    ollama = OLLAMA.events((await send(client, "ollama", request("ollama", prompt))).content)
    assert (ollama[-1]["prompt_eval_count"], ollama[-1]["eval_count"]) == (5, words + fragments)


async def test_a_reply_cut_at_max_tokens_before_its_calls_makes_none(
    client: httpx.AsyncClient,
) -> None:
    prompt = "weather? @call=1 @think=3"
    response = await send(client, "openai", request("openai", prompt, max_tokens=2))
    assert calls_of("openai", response.content) == []
    assert openai_finish(response.content) == "length"
