"""The fake upstream itself: the tests and the benchmark lean on it behaving like a server."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson

from proxy.fake_upstream import reply_text
from tests.servers import FakeUpstreamServer, ProxyServer

CHAT = "/v1/chat/completions"


def chat_body(prompt: str) -> dict[str, object]:
    return {"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]}


async def test_keeps_connections_alive(upstream: FakeUpstreamServer, marker: str) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        first = await client.post(CHAT, json=chat_body(f"{marker}-1"))
        accepted = upstream.fake.connections_accepted
        second = await client.post(CHAT, json=chat_body(f"{marker}-2"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert upstream.fake.connections_accepted == accepted


async def test_streams_sse_with_the_reply_text(upstream: FakeUpstreamServer, marker: str) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        response = await client.post(CHAT, json=chat_body(f"{marker} @tokens=3"))
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text.endswith("data: [DONE]\n\n")
    events = [orjson.loads(line[6:]) for line in response.content.split(b"\n\n")
              if line.startswith(b"data: {")]  # fmt: skip
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == reply_text(f"{marker} @tokens=3", 3)


async def test_answers_probes_and_rejects_bad_requests(upstream: FakeUpstreamServer) -> None:
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        models = await client.get("/v1/models")
        unknown = await client.post("/nope", json={})
        not_json = await client.post(CHAT, content=b"{", headers={"Content-Type": "text/plain"})
    assert models.status_code == 200
    assert unknown.status_code == 404
    assert not_json.status_code == 400


async def test_status_fault_sends_retry_after(upstream: FakeUpstreamServer, marker: str) -> None:
    prompt = f"{marker} @fault=status @status=429 @retry_after=3"
    async with httpx.AsyncClient(base_url=upstream.url) as client:
        response = await client.post(CHAT, json=chat_body(prompt))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_upstream_that_never_answers_headers_is_504(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(first_token_timeout=0.3)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post("/v1/stream", json={"prompt": f"{marker} @fault=hang-headers"})
    assert response.status_code == 504
    assert (await upstream.wait_disconnected(marker)).disconnected_at is not None
