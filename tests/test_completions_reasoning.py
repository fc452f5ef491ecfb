"""A thinking model's thoughts on POST /v1/chat/completions, read by OpenAI's Python SDK (issue 26).

The field Open WebUI and LibreChat read: `delta.reasoning_content`, a string on the chunks that
carry reasoning and on no other; `message.reasoning_content` when not streamed. The SDK keeps
a field outside OpenAI's schema as a pydantic extra (`model_extra`). Every dialect that thinks,
behind one proxy, each in its own wire shape.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from proxy.fake_upstream import reasoning_text, reply_text
from tests.servers import ProxyServer
from tests.test_completions import async_client, sync_client, user
from tests.test_models import MODELS

# The models of tests/test_models.py whose dialects read reasoning.
THINKING_MODELS = tuple(
    name for name, (dialect, _) in MODELS.items() if dialect in {"openai", "anthropic", "ollama"}
)
# Each way an upstream spells its thoughts: (model, the directive that picks the spelling).
THINKING_SPELLINGS = [
    pytest.param("chat", "", id="openai-reasoning_content"),
    pytest.param("chat", "@reasoning_field=reasoning", id="openai-reasoning"),
    pytest.param("claude", "", id="anthropic-thinking"),
    pytest.param("llama", "", id="ollama-thinking"),
]


def reasoning_of(chunk: ChatCompletionChunk) -> str | None:
    extra: dict[str, Any] = chunk.choices[0].delta.model_extra or {}
    value: str | None = extra.get("reasoning_content")
    return value


# --- streamed ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "spelling"), THINKING_SPELLINGS)
def test_sync_sdk_streams_the_exact_reasoning_then_the_exact_text(
    every_model: ProxyServer,
    marker: str,
    model: str,
    spelling: str,
) -> None:
    # Multi-byte UTF-8 in both channels, their bytes cut 7 at a time upstream.
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @split=7 {spelling}"
    with sync_client(every_model) as client:
        stream = client.chat.completions.create(model=model, messages=user(prompt), stream=True)
        chunks = [chunk for chunk in stream if chunk.choices]
    thinking = [chunk for chunk in chunks if reasoning_of(chunk) is not None]
    answering = [chunk for chunk in chunks if chunk.choices[0].delta.content]
    assert "".join(reasoning_of(chunk) or "" for chunk in thinking) == reasoning_text(prompt, 9)
    assert "".join(c.choices[0].delta.content or "" for c in answering) == reply_text(prompt, 20)
    assert chunks.index(thinking[-1]) < chunks.index(answering[0])  # all thoughts, then the answer
    # Only chunks with thoughts carry the field, never empty: a client opens no empty block.
    assert all(reasoning_of(chunk) for chunk in thinking)
    assert not any(chunk.choices[0].delta.content for chunk in thinking)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_async_sdk_streams_the_reasoning_and_counts_it_in_the_usage(
    every_model: ProxyServer,
    marker: str,
    model: str,
) -> None:
    prompt = f"{marker} @think=6 @text=tricky @tokens=10"
    async with async_client(every_model) as client:
        stream = await client.chat.completions.create(
            model=model,
            messages=user(prompt),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    *answer, last = chunks
    assert "".join(reasoning_of(chunk) or "" for chunk in answer) == reasoning_text(prompt, 6)
    assert "".join(c.choices[0].delta.content or "" for c in answer) == reply_text(prompt, 10)
    usage = last.usage
    assert usage is not None
    assert usage.completion_tokens == 6 + 10  # upstreams bill the thoughts as output
    if MODELS[model][0] == "openai":  # the one dialect whose upstream reports the split
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 6


@pytest.mark.parametrize("model", THINKING_MODELS)
def test_sync_sdk_asking_with_reasoning_effort_streams_the_default_thoughts(
    every_model: ProxyServer,
    marker: str,
    model: str,
) -> None:
    # Each dialect asks its own way (reasoning_effort, thinking, think); the fake thinks 4 tokens.
    prompt = f"{marker} @text=tricky @tokens=5"
    with sync_client(every_model) as client:
        stream = client.chat.completions.create(
            model=model,
            messages=user(prompt),
            stream=True,
            reasoning_effort="low",
        )
        chunks = list(stream)
    assert "".join(reasoning_of(chunk) or "" for chunk in chunks) == reasoning_text(prompt, 4)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply_text(prompt, 5)


def test_without_thinking_no_chunk_carries_reasoning(
    every_model: ProxyServer,
    marker: str,
) -> None:
    prompt = f"{marker} @text=tricky @tokens=5"
    with sync_client(every_model) as client:
        stream = client.chat.completions.create(model="chat", messages=user(prompt), stream=True)
        chunks = list(stream)
    assert all("reasoning_content" not in (c.choices[0].delta.model_extra or {}) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply_text(prompt, 5)


# --- not streamed --------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "spelling"), THINKING_SPELLINGS)
def test_sync_sdk_gets_the_reasoning_of_the_whole_completion(
    every_model: ProxyServer,
    marker: str,
    model: str,
    spelling: str,
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @split=3 {spelling}"
    with sync_client(every_model) as client:
        completion = client.chat.completions.create(model=model, messages=user(prompt))
    message = completion.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == reasoning_text(prompt, 9)
    assert message.content == reply_text(prompt, 20)
    assert completion.choices[0].finish_reason == "stop"


def test_a_whole_completion_without_thinking_has_no_reasoning(
    every_model: ProxyServer,
    marker: str,
) -> None:
    prompt = f"{marker} @tokens=5"
    with sync_client(every_model) as client:
        completion = client.chat.completions.create(model="claude", messages=user(prompt))
    assert "reasoning_content" not in (completion.choices[0].message.model_extra or {})
    assert completion.choices[0].message.content == reply_text(prompt, 5)
