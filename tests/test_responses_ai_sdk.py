"""The AI SDK's OpenAI provider on POST /v1/responses (issue 28).

`createOpenAI({baseURL})(model)`, the provider's default model, calls the Responses API
(npm `@ai-sdk/openai`, pinned in tests/js/package.json at the version built on `ai` 7's
provider packages), read by `streamText` from `ai` 7 in tests/js/openai_responses_client.mjs.
The provider reads a reasoning item's summary as reasoning parts and each `function_call`
item as a tool call; with a tool's `execute` the SDK sends the calls and their outputs back in
a second request, whole: the proxy keeps no state, so an item the SDK would only reference is
refused unless it is reasoning (docs/api.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.fake_upstream import reasoning_text, reply_text, tool_answer_text, tool_call_input
from tests.frontends import AI_SDK_DIRECTORY, install_ai_sdk, run_node_script
from tests.servers import ProxyServer
from tests.test_completions_reasoning import THINKING_MODELS
from tests.test_models import MODELS
from tests.test_tools import TOOL_MODELS


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


async def run_provider(
    node: str, proxy: ProxyServer, model: str, prompt: str, **options: Any
) -> dict[str, Any]:
    options = {"baseURL": f"{proxy.url}/v1", "model": model, "prompt": prompt, **options}
    return await run_node_script(node, AI_SDK_DIRECTORY / "openai_responses_client.mjs", options)


@pytest.mark.parametrize("model", MODELS)
async def test_stream_text_yields_the_exact_text_for_every_dialect(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20 @split=3"
    result = await run_provider(node, every_model, model, prompt)
    assert result["errors"] == []
    assert result["text"] == reply_text(prompt, 20)
    assert result["types"] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert result["finishReason"] == "stop"


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_stream_text_yields_the_reasoning_then_the_text(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @split=7"
    result = await run_provider(node, every_model, model, prompt)
    assert result["errors"] == []
    assert result["reasoning"] == reasoning_text(prompt, 9)
    assert result["text"] == reply_text(prompt, 20)
    assert result["types"][2:8] == [
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
    ]


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_a_tool_with_execute_loops_to_the_final_text(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    # Thoughts before the call: the second request references them (store is the SDK's
    # default), which the proxy takes as it takes a reasoning item.
    prompt = f"{marker} @think=3 @call=1"
    result = await run_provider(node, every_model, model, prompt, tool=True)
    assert result["errors"] == []
    city = tool_call_input(prompt, 0)["city"]
    assert result["toolInputs"] == [tool_call_input(prompt, 0)]
    assert result["text"] == tool_answer_text([f"sunny in {city}"])
    assert result["steps"] == 2
    assert "tool-result" in result["types"]
    assert result["finishReason"] == "stop"


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_text_before_a_call_loops_with_store_false(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=1 @text_before_call=1"
    result = await run_provider(node, every_model, model, prompt, tool=True, store=False)
    assert result["errors"] == []
    city = tool_call_input(prompt, 0)["city"]
    assert result["text"] == "Let me check." + tool_answer_text([f"sunny in {city}"])
    assert result["steps"] == 2


async def test_text_before_a_call_with_the_default_store_is_refused_naming_the_reference(
    node: str, every_model: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @call=1 @text_before_call=1"
    result = await run_provider(node, every_model, "chat", prompt, tool=True)
    assert len(result["errors"]) == 1
    assert "item_reference" in result["errors"][0]
    assert "store = false" in result["errors"][0]


async def test_a_failure_mid_stream_is_an_error_part(
    node: str, every_model: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @fault=drop-mid @after=2"
    result = await run_provider(node, every_model, "chat", prompt)
    assert result["text"] == reply_text(prompt, 2)
    assert result["errors"] == ["upstream connection dropped mid-stream"]
    assert result["finishReason"] == "error"
