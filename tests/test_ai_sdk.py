"""The Vercel AI SDK's text-stream clients (npm `ai` 5 and 7, pinned in tests/js/package.json).

`tests/js/ai_sdk_client.mjs` runs them in Node 22 (npm's `node` package: `ai` 7 needs Node >= 22).
`completion` is `callCompletionApi`, what `useCompletion({streamProtocol: 'text'})` runs;
`chat` is `AbstractChat` with `TextStreamChatTransport`, what `useChat` runs for text streams.
Both keep their names and shape in `ai` 7 (whose `callCompletionApi` also takes an optional
`getAbortController`, passed as its `useCompletion` does), so one client serves both majors.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from tests.frontends import (
    AI_SDK_DIRECTORY,
    AI_SDKS,
    install_ai_sdk,
    proxy_answer,
    proxy_error_message,
    run_node_script,
)
from tests.servers import ProxyServer

CLIENTS = ["completion", "chat"]


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


async def run_client(
    node: str,
    sdk: str,
    client: str,
    proxy: ProxyServer,
    prompt: str,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    options = {
        "sdk": sdk,
        "client": client,
        "url": f"{proxy.url}/v1/stream",
        "prompt": prompt,
        "headers": headers or {},
    }
    return await run_node_script(node, AI_SDK_DIRECTORY / "ai_sdk_client.mjs", options)


@pytest.mark.parametrize("sdk", AI_SDKS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_ai_sdk_streams_in_several_updates_and_finishes_with_the_exact_text(
    node: str, proxy: ProxyServer, marker: str, sdk: str, client: str
) -> None:
    # The tricky text, 40 tokens: the whole vocabulary (emoji, CJK, CR/LF).
    prompt = f"{marker} @text=tricky @tokens=40 @delay=0.02"
    expected = await proxy_answer(proxy.url, prompt)

    seen = await run_client(node, sdk, client, proxy, prompt)

    assert seen["error"] is None
    assert seen["finished"] is True
    assert seen["text"] == expected.text
    updates = seen["updates"]
    assert len(updates) >= 10, f"{len(updates)} updates: the answer did not stream"
    assert all(later.startswith(earlier) for earlier, later in pairwise(updates))
    assert updates[-1] == expected.text


@pytest.mark.parametrize("sdk", AI_SDKS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_ai_sdk_sees_a_stream_dropped_mid_answer_as_an_error_not_a_finished_message(
    node: str, proxy: ProxyServer, marker: str, sdk: str, client: str
) -> None:
    prompt = f"{marker} @tokens=20 @delay=0.02 @fault=drop-mid @after=6"
    partial = await proxy_answer(proxy.url, prompt)
    assert not partial.completed

    seen = await run_client(node, sdk, client, proxy, prompt)

    assert seen["status"] == "error"
    assert seen["error"]
    assert seen["finished"] is False
    # What had arrived stays visible (bytes that came with the broken connection may not).
    assert seen["updates"]
    assert partial.text.startswith(seen["updates"][-1])


@pytest.mark.parametrize("sdk", AI_SDKS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_ai_sdk_passes_a_client_key_through_headers(
    node: str, start_proxy: Callable[..., ProxyServer], marker: str, sdk: str, client: str
) -> None:
    proxy = start_proxy(api_keys="client-key-1")
    prompt = f"{marker} @tokens=8"
    expected = await proxy_answer(proxy.url, prompt, {"Authorization": "Bearer client-key-1"})
    refusal = await proxy_error_message(proxy.url, prompt)

    with_key = await run_client(
        node, sdk, client, proxy, prompt, {"Authorization": "Bearer client-key-1"}
    )
    without_key = await run_client(node, sdk, client, proxy, prompt)

    assert with_key["finished"] is True
    assert with_key["text"] == expected.text
    assert without_key["finished"] is False
    assert refusal in without_key["error"]
