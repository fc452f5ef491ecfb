"""The AI SDK's OpenAI-compatible provider on POST /v1/chat/completions (issue 26).

How an app built on the AI SDK calls a gateway: `createOpenAICompatible({name, baseURL})`
(npm `@ai-sdk/openai-compatible`, pinned in tests/js/package.json at the version built on
`ai` 7's provider packages) with `streamText` or `generateText` from `ai` 7, run by
tests/js/openai_compatible_client.mjs in Node 22. The provider reads a chunk's
`delta.reasoning_content ?? delta.reasoning` (a non-empty string) as a `reasoning-delta`,
and a whole completion's `message.reasoning_content ?? message.reasoning`.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.fake_upstream import reasoning_text, reply_text
from tests.frontends import AI_SDK_DIRECTORY, install_ai_sdk, run_node_script
from tests.servers import ProxyServer
from tests.test_completions_reasoning import THINKING_MODELS, THINKING_SPELLINGS
from tests.test_models import MODELS

# One reasoning block, then one text block, in one step: what an app renders as thoughts
# above the answer (deltas of one type folded into one by the client).
THOUGHTS_THEN_ANSWER = [
    "start",
    "start-step",
    "reasoning-start",
    "reasoning-delta",
    "reasoning-end",
    "text-start",
    "text-delta",
    "text-end",
    "finish-step",
    "finish",
]


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


async def run_provider(
    node: str, proxy: ProxyServer, model: str, prompt: str, **options: Any
) -> dict[str, Any]:
    options = {"baseURL": f"{proxy.url}/v1", "model": model, "prompt": prompt, **options}
    return await run_node_script(node, AI_SDK_DIRECTORY / "openai_compatible_client.mjs", options)


@pytest.mark.parametrize(("model", "spelling"), THINKING_SPELLINGS)
async def test_stream_text_yields_the_exact_reasoning_then_the_exact_answer(
    node: str,
    every_model: ProxyServer,
    marker: str,
    model: str,
    spelling: str,
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @split=7 {spelling}"
    result = await run_provider(node, every_model, model, prompt)
    assert result["errors"] == []
    assert result["reasoning"] == reasoning_text(prompt, 9)
    assert result["text"] == reply_text(prompt, 20)
    assert result["types"] == THOUGHTS_THEN_ANSWER
    assert result["finishReason"] == "stop"


async def test_stream_text_usage_counts_the_reasoning_tokens_the_upstream_reported(
    node: str,
    every_model: ProxyServer,
    marker: str,
) -> None:
    # The openai dialect's upstream reports the split (completion_tokens_details).
    assert MODELS["chat"][0] == "openai"
    prompt = f"{marker} @think=9 @tokens=20"
    result = await run_provider(node, every_model, "chat", prompt)
    assert result["reasoningTokens"] == 9


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_the_reasoning_effort_provider_option_asks_for_thoughts(
    node: str,
    every_model: ProxyServer,
    marker: str,
    model: str,
) -> None:
    # providerOptions {proxy: {reasoningEffort}} is sent as reasoning_effort; the fake thinks 4.
    prompt = f"{marker} @text=tricky @tokens=5"
    result = await run_provider(node, every_model, model, prompt, reasoningEffort="low")
    assert result["reasoning"] == reasoning_text(prompt, 4)
    assert result["text"] == reply_text(prompt, 5)
    assert result["types"] == THOUGHTS_THEN_ANSWER


async def test_stream_text_without_thinking_has_no_reasoning_block(
    node: str,
    every_model: ProxyServer,
    marker: str,
) -> None:
    prompt = f"{marker} @text=tricky @tokens=5"
    result = await run_provider(node, every_model, "chat", prompt)
    assert result["errors"] == []
    assert result["text"] == reply_text(prompt, 5)
    assert not any(kind.startswith("reasoning") for kind in result["types"])


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_generate_text_reads_the_reasoning_of_a_whole_completion(
    node: str,
    every_model: ProxyServer,
    marker: str,
    model: str,
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20"
    result = await run_provider(node, every_model, model, prompt, generate=True)
    assert result["reasoning"] == reasoning_text(prompt, 9)
    assert result["text"] == reply_text(prompt, 20)
    assert result["types"] == ["reasoning", "text"]
    assert result["finishReason"] == "stop"
