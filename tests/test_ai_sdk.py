"""The Vercel AI SDK (npm `ai` 5, pinned in tests/js/package.json) against the proxy, in Node.

`completion` is `callCompletionApi`, what `useCompletion({streamProtocol: 'text'})` runs;
`chat` is `AbstractChat` with `TextStreamChatTransport`, what `useChat` runs for text streams.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.frontends import proxy_answer, proxy_error_message, require_program
from tests.servers import ProxyServer

JS_DIRECTORY = Path(__file__).parent / "js"
CLIENTS = ["completion", "chat"]


def _installed(package_json: dict[str, Any]) -> bool:
    for name, version in package_json["dependencies"].items():
        installed = JS_DIRECTORY / "node_modules" / name / "package.json"
        if not installed.exists() or json.loads(installed.read_text())["version"] != version:
            return False
    return True


@pytest.fixture(scope="session")
def node() -> str:
    """Node, with tests/js's pinned packages installed once (no lock file is kept)."""
    executable = require_program("node")
    npm = require_program("npm")
    if not _installed(json.loads((JS_DIRECTORY / "package.json").read_text())):
        install = subprocess.run(
            [npm, "install", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIRECTORY,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if install.returncode != 0:
            pytest.fail(f"npm install in {JS_DIRECTORY} failed:\n{install.stderr}", pytrace=False)
    return executable


async def run_client(
    node: str, client: str, proxy: ProxyServer, prompt: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    options = {
        "client": client,
        "url": f"{proxy.url}/v1/stream",
        "prompt": prompt,
        "headers": headers or {},
    }
    process = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIRECTORY / "ai_sdk_client.mjs"),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout)
    return result


@pytest.mark.parametrize("client", CLIENTS)
async def test_ai_sdk_streams_in_several_updates_and_finishes_with_the_exact_text(
    node: str, proxy: ProxyServer, marker: str, client: str
) -> None:
    # The tricky text, 40 tokens: the whole vocabulary (emoji, CJK, CR/LF).
    prompt = f"{marker} @text=tricky @tokens=40 @delay=0.02"
    expected = await proxy_answer(proxy.url, prompt)

    seen = await run_client(node, client, proxy, prompt)

    assert seen["error"] is None
    assert seen["finished"] is True
    assert seen["text"] == expected.text
    updates = seen["updates"]
    assert len(updates) >= 10, f"{len(updates)} updates: the answer did not stream"
    assert all(later.startswith(earlier) for earlier, later in pairwise(updates))
    assert updates[-1] == expected.text


@pytest.mark.parametrize("client", CLIENTS)
async def test_ai_sdk_sees_a_stream_dropped_mid_answer_as_an_error_not_a_finished_message(
    node: str, proxy: ProxyServer, marker: str, client: str
) -> None:
    prompt = f"{marker} @tokens=20 @delay=0.02 @fault=drop-mid @after=6"
    partial = await proxy_answer(proxy.url, prompt)
    assert not partial.completed

    seen = await run_client(node, client, proxy, prompt)

    assert seen["status"] == "error"
    assert seen["error"]
    assert seen["finished"] is False
    # What had arrived stays visible (bytes that came with the broken connection may not).
    assert seen["updates"]
    assert partial.text.startswith(seen["updates"][-1])


@pytest.mark.parametrize("client", CLIENTS)
async def test_ai_sdk_passes_a_client_key_through_headers(
    node: str, start_proxy: Callable[..., ProxyServer], marker: str, client: str
) -> None:
    proxy = start_proxy(api_keys="client-key-1")
    prompt = f"{marker} @tokens=8"
    expected = await proxy_answer(proxy.url, prompt, {"Authorization": "Bearer client-key-1"})
    refusal = await proxy_error_message(proxy.url, prompt)

    with_key = await run_client(
        node, client, proxy, prompt, {"Authorization": "Bearer client-key-1"}
    )
    without_key = await run_client(node, client, proxy, prompt)

    assert with_key["finished"] is True
    assert with_key["text"] == expected.text
    assert without_key["finished"] is False
    assert refusal in without_key["error"]
