"""The real AI SDK (npm `ai` 5 and 7, pinned in tests/js/package.json) on POST /v1/chat.

`tests/js/chat_client.mjs` runs `AbstractChat` with `DefaultChatTransport`, what `useChat`
runs by default, in Node 22 (npm's `node` package: `ai` 7 needs Node >= 22). A thinking
model's thoughts reach the message as a `reasoning` part before its `text` part (issue 26).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxy.fake_upstream import reasoning_text, reply_text
from tests.frontends import AI_SDK_DIRECTORY, AI_SDKS, install_ai_sdk, run_node_script
from tests.servers import ProxyServer


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


async def run_chat(node: str, proxy: ProxyServer, **options: Any) -> dict[str, Any]:
    options = {"api": f"{proxy.url}/v1/chat", "headers": {}, **options}
    return await run_node_script(node, AI_SDK_DIRECTORY / "chat_client.mjs", options)


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_streams_and_finishes_with_the_exact_text(
    node: str, proxy: ProxyServer, marker: str, sdk: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=40 @delay=0.01"
    result = await run_chat(node, proxy, sdk=sdk, chatId=marker, prompt=prompt)
    assert result["text"] == reply_text(prompt, 40)
    assert result["status"] == "ready"
    assert result["finished"] is True
    assert result["error"] is None
    usage = result["metadata"]["usage"]  # the finish part's message metadata
    assert usage["completion_tokens"] == 40
    assert usage["prompt_tokens"] > 0


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_shows_the_thoughts_as_a_reasoning_part_before_the_answer(
    node: str, proxy: ProxyServer, marker: str, sdk: str
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @delay=0.005"
    result = await run_chat(node, proxy, sdk=sdk, chatId=marker, prompt=prompt)
    assert result["reasoning"] == reasoning_text(prompt, 9)
    assert result["text"] == reply_text(prompt, 20)
    # One reasoning part, then one text part: the thoughts stay one block above the answer.
    assert result["partTypes"] == ["step-start", "reasoning", "text"]
    assert result["status"] == "ready"
    assert result["finished"] is True
    assert result["error"] is None


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_asking_for_reasoning_in_the_body_shows_the_default_thoughts(
    node: str, proxy: ProxyServer, marker: str, sdk: str
) -> None:
    # An app asks with `sendMessage(message, {body: {reasoning}})`; the fake thinks 4 tokens.
    prompt = f"{marker} @text=tricky @tokens=5"
    result = await run_chat(
        node, proxy, sdk=sdk, chatId=marker, prompt=prompt, body={"reasoning": "low"}
    )
    assert result["reasoning"] == reasoning_text(prompt, 4)
    assert result["text"] == reply_text(prompt, 5)
    assert result["partTypes"] == ["step-start", "reasoning", "text"]
    assert result["finished"] is True


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_without_thinking_has_no_reasoning_part(
    node: str, proxy: ProxyServer, marker: str, sdk: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=5"
    result = await run_chat(node, proxy, sdk=sdk, chatId=marker, prompt=prompt)
    assert result["reasoning"] == ""
    assert result["partTypes"] == ["step-start", "text"]


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_shows_a_dropped_upstream_as_an_error(
    node: str, proxy: ProxyServer, marker: str, sdk: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=drop-mid @after=4"
    result = await run_chat(node, proxy, sdk=sdk, chatId=marker, prompt=prompt)
    assert result["status"] == "error"
    assert "dropped" in result["error"]
    assert result["finished"] is False
    assert result["text"] == reply_text(prompt, 4)


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_resume_continues_the_answer_after_the_client_dropped(
    node: str, start_proxy: Callable[..., ProxyServer], marker: str, sdk: str
) -> None:
    proxy = start_proxy(resume=True)
    prompt = f"{marker} @text=tricky @tokens=60 @delay=0.03"
    result = await run_chat(node, proxy, sdk=sdk, chatId=marker, prompt=prompt, dropAfter=8)
    dropped = result["dropped"]
    assert dropped is not None
    assert len(dropped["text"]) < len(reply_text(prompt, 60))
    assert result["text"] == reply_text(prompt, 60)
    assert result["messageId"] == dropped["messageId"]  # the same answer, not a new one
    assert result["status"] == "ready"
    assert result["finished"] is True


@pytest.mark.parametrize("sdk", AI_SDKS)
async def test_use_chat_resume_shows_the_thoughts_once_and_the_whole_answer(
    node: str, start_proxy: Callable[..., ProxyServer], marker: str, sdk: str
) -> None:
    proxy = start_proxy(resume=True)
    prompt = f"{marker} @think=6 @text=tricky @tokens=60 @delay=0.03"
    result = await run_chat(node, proxy, sdk=sdk, chatId=marker, prompt=prompt, dropAfter=8)
    dropped = result["dropped"]
    assert dropped is not None
    assert len(dropped["text"]) < len(reply_text(prompt, 60))
    assert result["reasoning"] == reasoning_text(prompt, 6)
    assert result["text"] == reply_text(prompt, 60)
    assert result["partTypes"] == ["step-start", "reasoning", "text"]
    assert result["messageId"] == dropped["messageId"]
    assert result["finished"] is True
