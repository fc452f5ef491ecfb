"""The proxy against scripted upstreams that misbehave at the byte level."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.scripted import LAST_CHUNK, Serve, chunk, read_request
from tests.servers import ProxyServer, proxy_settings
from tests.test_operations import log_lines  # noqa: F401  (fixture)

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def openai_body(text: str) -> bytes:
    delta = orjson.dumps({"choices": [{"delta": {"content": text}}]})
    return b"data: " + delta + b"\n\ndata: [DONE]\n\n"


@pytest.fixture
def proxies() -> Iterator[list[ProxyServer]]:
    started: list[ProxyServer] = []
    yield started
    for proxy in started:
        proxy.close()


def start(proxies: list[ProxyServer], upstream_url: str, **settings: object) -> ProxyServer:
    proxy = ProxyServer(proxy_settings(upstream_url, **settings))
    proxies.append(proxy)
    return proxy


async def stream(proxy: ProxyServer, prompt: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", json={"prompt": prompt})


async def test_a_kept_alive_connection_closed_unanswered_costs_a_counted_attempt(
    serve: Serve,
    proxies: list[ProxyServer],
    log_lines: list[str],  # noqa: F811
) -> None:
    # The upstream answers one request per connection and then reads the next one and hangs
    # up: the proxy cannot know whether it acted on it, so it tries again as a new attempt
    # and says so in the stream's log line.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(openai_body(f"answer {n}")) + LAST_CHUNK)
        await writer.drain()
        await read_request(reader)

    proxy = start(proxies, await serve(handler))
    assert (await stream(proxy, "one")).text == "answer 0"
    assert (await stream(proxy, "two")).text == "answer 1"
    lines = [orjson.loads(line) for line in log_lines if '"proxy.stream"' in line]
    assert [(line["outcome"], line["attempts"]) for line in lines] == [
        ("completed", 1),
        ("completed", 2),
    ]
