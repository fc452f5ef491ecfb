"""Token usage as each API reports it: where, in what shape, and only when asked."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.fake_upstream import prompt_tokens
from tests.fake_upstream.readers import DIALECTS, TOKENS

# What each API's own client sends to be told the usage.
ASKING: dict[str, dict[str, Any]] = {
    "openai": {"stream_options": {"include_usage": True}},
    "openai-completions": {"stream_options": {"include_usage": True}},
    "tgi": {"parameters": {"details": True}},
    "ollama": {},
    "anthropic": {},
}


def reported(dialect: str, events: list[Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens as a reader of that API finds them."""
    prompt: int | None = None
    completion: int | None = None
    for event in events:
        if event == "[DONE]":
            continue
        if dialect.startswith("openai") and event.get("usage"):
            assert event["choices"] == []  # a usage-only last chunk
            prompt = event["usage"]["prompt_tokens"]
            completion = event["usage"]["completion_tokens"]
            assert event["usage"]["total_tokens"] == prompt + completion
        elif dialect == "ollama" and event.get("done"):
            prompt, completion = event.get("prompt_eval_count"), event.get("eval_count")
        elif dialect == "tgi" and event.get("details"):
            completion = event["details"]["generated_tokens"]
        elif dialect == "anthropic" and event["type"] == "message_start":
            prompt = event["message"].get("usage", {}).get("input_tokens")
        elif dialect == "anthropic" and event["type"] == "message_delta":
            completion = event.get("usage", {}).get("output_tokens")
    return prompt, completion


@pytest.mark.parametrize("name", DIALECTS)
async def test_usage_in_each_apis_shape_when_asked(client: httpx.AsyncClient, name: str) -> None:
    dialect = DIALECTS[name]
    prompt = "count these four words"
    body = dialect.request(prompt)
    for key, value in ASKING[name].items():
        body[key] = {**body.get(key, {}), **value}
    response = await client.post(dialect.path, json=body)
    events = dialect.events(response.content)
    # TGI's stream reports generated tokens only.
    expected_prompt = None if name == "tgi" else prompt_tokens(prompt)
    assert reported(name, events) == (expected_prompt, TOKENS)
    assert prompt_tokens(prompt) == 4


@pytest.mark.parametrize("name", DIALECTS)
async def test_no_usage_when_the_prompt_says_so(client: httpx.AsyncClient, name: str) -> None:
    dialect = DIALECTS[name]
    body = dialect.request("quiet @usage=0")
    for key, value in ASKING[name].items():
        body[key] = {**body.get(key, {}), **value}
    response = await client.post(dialect.path, json=body)
    assert reported(name, dialect.events(response.content)) == (None, None)
    assert response.text.count("usage") == 0


@pytest.mark.parametrize("name", ["openai", "openai-completions", "tgi"])
async def test_apis_that_report_usage_only_when_asked(client: httpx.AsyncClient, name: str) -> None:
    dialect = DIALECTS[name]
    response = await client.post(dialect.path, json=dialect.request("not asked"))
    assert reported(name, dialect.events(response.content)) == (None, None)
