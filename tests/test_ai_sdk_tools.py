"""The AI SDK's tool loop through the proxy (issue 27): `streamText` from `ai` 7 with tools that
have `execute` and `stopWhen: stepCountIs(3)`, over the OpenAI-compatible provider (pinned in
tests/js/package.json), run by tests/js/tool_loop_client.mjs in Node 22.

One loop is two requests: the first gets the fake's calls (`@call=N`), the SDK runs each tool and
sends the calls back with a `tool` message per result (its content the JSON text of what
`execute` returned); the second gets `tool_answer_text` of those contents. The client records
what it posted to the proxy, the fake what the proxy posted upstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.fake_upstream import (
    TEXT_BEFORE_CALL,
    tool_answer_text,
    tool_call_fragments,
    tool_call_id,
    tool_call_input,
)
from tests.frontends import AI_SDK_DIRECTORY, install_ai_sdk, run_node_script
from tests.servers import FakeUpstreamServer, ProxyServer
from tests.test_models import MODELS

TOOL_MODELS = ("chat", "claude", "llama")
STREAMED_CALL_MODELS = ("chat", "claude")  # Ollama sends a call whole, in one line
TOOLS = ["get_weather", "get_time"]


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


async def run_loop(
    node: str, proxy: ProxyServer, model: str, prompt: str, tools: list[str]
) -> dict[str, Any]:
    options = {"baseURL": f"{proxy.url}/v1", "model": model, "prompt": prompt, "tools": tools}
    return await run_node_script(node, AI_SDK_DIRECTORY / "tool_loop_client.mjs", options)


def json_text(value: Any) -> str:
    """`JSON.stringify(value)`: compact, non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def expected_output(tool: str, call_input: dict[str, Any]) -> dict[str, Any]:
    """What tool_loop_client.mjs's `execute` returns for call_input."""
    city, call = call_input["city"], call_input["call"]
    return {"tool": tool, "city": city, "call": call, "forecast": "sunny, 21 °C 🌤"}


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in request["messages"] if message["role"] == "tool"]


@dataclass(slots=True, frozen=True)
class SentBack:
    """What one request upstream carries back in its dialect's shape: the assistant's calls as
    (id, name, input), and the results as (the call each answers, content). Ollama's calls have
    no id, and its results name their tool instead."""

    calls: list[tuple[str | None, str, Any]]
    results: list[tuple[str, Any]]


def sent_back(dialect: str, body: dict[str, Any]) -> SentBack:
    messages = body["messages"]
    if dialect == "anthropic":
        uses = [b for m in messages if m["role"] == "assistant" for b in m["content"]]
        results = [b for m in messages if m["role"] == "user" for b in m["content"]
                   if isinstance(b, dict) and b["type"] == "tool_result"]  # fmt: skip
        return SentBack(
            [(b["id"], b["name"], b["input"]) for b in uses if b["type"] == "tool_use"],
            [(b["tool_use_id"], b["content"]) for b in results],
        )
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    tools = [m for m in messages if m["role"] == "tool"]
    if dialect == "ollama":
        return SentBack(
            [(None, c["function"]["name"], c["function"]["arguments"]) for c in calls],
            [(m["tool_name"], m["content"]) for m in tools],
        )
    return SentBack(
        [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls],
        [(m["tool_call_id"], m["content"]) for m in tools],
    )


def assistant_text(dialect: str, body: dict[str, Any]) -> str:
    """The text of the assistant's turn that made the calls, in the dialect's shape."""
    (turn,) = [message for message in body["messages"] if message["role"] == "assistant"]
    if dialect == "anthropic":
        return "".join(block["text"] for block in turn["content"] if block["type"] == "text")
    text: str = turn["content"]
    return text


# The whole loop


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_stream_text_executes_the_call_and_answers_with_its_result(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} weather? @call=1"
    result = await run_loop(node, every_model, model, prompt, TOOLS[:1])
    assert result["errors"] == []
    call_input = tool_call_input(prompt, 0)
    (execution,) = result["executions"]
    assert (execution["tool"], execution["input"]) == ("get_weather", call_input)
    assert result["steps"] == ["tool-calls", "stop"]
    (sent,) = tool_messages(result["requests"][1])
    assert sent["content"] == json_text(expected_output("get_weather", call_input))
    assert result["texts"] == ["", tool_answer_text([sent["content"]])]


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_the_result_goes_back_under_the_id_the_sdk_got_with_the_call(
    node: str,
    every_model: ProxyServer,
    upstream: FakeUpstreamServer,
    marker: str,
    model: str,
) -> None:
    dialect = MODELS[model][0]
    prompt = f"{marker} weather? @call=1"
    result = await run_loop(node, every_model, model, prompt, TOOLS[:1])
    (call,) = result["calls"]
    call_id = call["toolCallId"]
    if dialect == "ollama":  # no id upstream: the proxy's own must come back with the result
        assert call_id.startswith("call_")
    else:
        assert call_id == tool_call_id(dialect, 0)
    assert [e["toolCallId"] for e in result["executions"]] == [call_id]
    sdk_request = result["requests"][1]
    assert sdk_request["messages"][1]["tool_calls"][0]["id"] == call_id
    assert [m["tool_call_id"] for m in tool_messages(sdk_request)] == [call_id]
    first, second = upstream.find(marker)
    assert sent_back(dialect, first.json) == SentBack([], [])
    content = tool_messages(sdk_request)[0]["content"]
    answers = "get_weather" if dialect == "ollama" else call_id
    assert sent_back(dialect, second.json) == SentBack(
        [(tool_call_id(dialect, 0), "get_weather", tool_call_input(prompt, 0))],
        [(answers, content)],
    )


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_two_parallel_calls_are_both_executed_and_both_results_answered(
    node: str,
    every_model: ProxyServer,
    upstream: FakeUpstreamServer,
    marker: str,
    model: str,
) -> None:
    dialect = MODELS[model][0]
    # Argument fragments of 3 characters, the upstream's bytes cut one at a time.
    prompt = f"{marker} weather and time? @call=2 @arg_split=3 @split=1"
    result = await run_loop(node, every_model, model, prompt, TOOLS)
    assert result["errors"] == []
    inputs = [tool_call_input(prompt, index) for index in (0, 1)]
    executed = sorted(result["executions"], key=lambda execution: execution["input"]["call"])
    assert [(e["tool"], e["input"]) for e in executed] == list(zip(TOOLS, inputs, strict=True))
    ids = [call["toolCallId"] for call in result["calls"]]
    assert len(set(ids)) == 2
    assert [e["toolCallId"] for e in executed] == ids
    sent = tool_messages(result["requests"][1])
    assert [m["tool_call_id"] for m in sent] == ids
    contents = [m["content"] for m in sent]
    outputs = [expected_output(tool, inputs[index]) for index, tool in enumerate(TOOLS)]
    assert contents == [json_text(output) for output in outputs]
    assert result["texts"] == ["", tool_answer_text(contents)]
    assert result["steps"] == ["tool-calls", "stop"]
    _, second = upstream.find(marker)
    # Ollama's calls go back without ids, and its results name their tool.
    answered = TOOLS if dialect == "ollama" else ids
    assert sent_back(dialect, second.json) == SentBack(
        [(tool_call_id(dialect, index), TOOLS[index], inputs[index]) for index in (0, 1)],
        list(zip(answered, contents, strict=True)),
    )


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_the_text_before_a_call_stays_in_its_step_and_goes_back_with_the_call(
    node: str,
    every_model: ProxyServer,
    upstream: FakeUpstreamServer,
    marker: str,
    model: str,
) -> None:
    dialect = MODELS[model][0]
    prompt = f"{marker} weather? @call=1 @text_before_call=1"
    result = await run_loop(node, every_model, model, prompt, TOOLS[:1])
    (sent,) = tool_messages(result["requests"][1])
    assert result["texts"] == [TEXT_BEFORE_CALL, tool_answer_text([sent["content"]])]
    assert result["steps"] == ["tool-calls", "stop"]
    _, second = upstream.find(marker)
    assert assistant_text(dialect, second.json) == TEXT_BEFORE_CALL


# A failure inside a call


@pytest.mark.parametrize("model", STREAMED_CALL_MODELS)
async def test_a_drop_inside_the_arguments_is_an_error_and_no_tool_runs(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} weather? @fault=drop-mid @after=2 @call=1"
    result = await run_loop(node, every_model, model, prompt, TOOLS[:1])
    assert result["errors"][0] == "upstream connection dropped mid-stream"
    types = result["types"]
    assert types.index("error") < types.index("finish-step")
    assert result["executions"] == []
    # The SDK closes the call it was given with what arrived: two fragments, not valid JSON.
    partial = "".join(tool_call_fragments(prompt, 0)[:2])
    assert [call["input"] for call in result["calls"]] == [partial]
    # No step finished. (The SDK sends the failed call back as a tool error and tries a second
    # step, which the fake drops too: each step ends as an error.)
    assert set(result["steps"]) == {"error"}


async def test_a_drop_before_ollamas_whole_call_is_a_failure_before_any_step(
    node: str, every_model: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} weather? @fault=drop-mid @after=2 @call=1"
    result = await run_loop(node, every_model, "llama", prompt, TOOLS[:1])
    assert result["errors"] == ["upstream connection dropped before any text"]
    assert (result["steps"], result["executions"], result["calls"]) == ([], [], [])
