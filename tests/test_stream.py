"""SPEC §1 over real sockets: exact text, no buffering, aborts, disconnects, concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from proxy.fake_upstream import reply_text
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer


async def post_stream(proxy: ProxyServer, prompt: str, **fields: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", json={"prompt": prompt, **fields})


async def test_body_is_exactly_the_upstream_text(proxy: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @text=tricky @tokens=40"
    response = await post_stream(proxy, prompt)
    assert response.status_code == 200
    assert response.text == reply_text(prompt, 40)


@pytest.mark.parametrize("split", [1, 2, 3, 5])
async def test_text_is_exact_when_upstream_bytes_arrive_split(
    proxy: ProxyServer, marker: str, split: int
) -> None:
    prompt = f"{marker} @text=tricky @tokens=40 @split={split}"
    response = await post_stream(proxy, prompt)
    assert response.content.decode() == reply_text(prompt, 40)


async def test_success_headers(proxy: ProxyServer, marker: str) -> None:
    response = await post_stream(proxy, marker)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.headers["x-request-id"]) >= 16


async def test_sane_client_request_id_is_kept_and_bad_one_replaced(
    proxy: ProxyServer, marker: str
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        kept = await client.post(
            "/v1/stream", json={"prompt": marker}, headers={"X-Request-ID": "trace-42.a:b"}
        )
        replaced = await client.post(
            "/v1/stream", json={"prompt": marker}, headers={"X-Request-ID": "bad id!"}
        )
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    assert replaced.headers["x-request-id"] not in ("", "bad id!")


async def test_deltas_arrive_while_upstream_is_still_producing(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=8 @delay=0.1"
    received: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=proxy.url) as client,
        client.stream("POST", "/v1/stream", json={"prompt": prompt}) as response,
    ):
        async for chunk in response.aiter_raw():
            received.append(chunk)
            if len(received) == 1:
                # The first token is here and the upstream has more to say.
                (record,) = upstream.find(marker)
                assert record.finished_at is None
    assert len(received) >= 4, "deltas were bunched together instead of streamed"
    assert b"".join(received).decode() == reply_text(prompt, 8)


async def test_upstream_that_finishes_without_text_gives_empty_200(
    proxy: ProxyServer, marker: str
) -> None:
    response = await post_stream(proxy, f"{marker} @tokens=0")
    assert response.status_code == 200
    assert response.content == b""


async def test_retry_after_upstream_5xx_then_success(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=status @status=503 @fail_times=2"
    response = await post_stream(proxy, prompt)
    assert response.status_code == 200
    assert response.text == reply_text(prompt, 12)
    assert len(upstream.find(marker)) == 3


async def test_retry_after_dropped_connection_before_first_token(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=drop-mid @after=0 @fail_times=1"
    response = await post_stream(proxy, prompt)
    assert response.status_code == 200
    assert response.text == reply_text(prompt, 12)
    assert len(upstream.find(marker)) == 2


async def test_nothing_is_retried_after_the_commit_point(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @fault=drop-mid @after=3 @fail_times=1"
    with pytest.raises(httpx.RemoteProtocolError):
        await post_stream(proxy, prompt)
    assert len(upstream.find(marker)) == 1


async def read_until_aborted(
    proxy: ProxyServer, prompt: str, **fields: object
) -> tuple[int, bytes]:
    """Streams the response; returns the status and the text received before the abort."""
    received = bytearray()
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10) as client,
        client.stream("POST", "/v1/stream", json={"prompt": prompt, **fields}) as response,
    ):
        with pytest.raises(httpx.RemoteProtocolError):  # incomplete chunked read
            await read_into(response, received)
        return response.status_code, bytes(received)


async def read_into(response: httpx.Response, received: bytearray) -> None:
    async for chunk in response.aiter_raw():
        received += chunk


@pytest.mark.parametrize(
    "fault",
    ["drop-mid", "hang-mid", "no-end", "error-event", "malformed"],
)
async def test_failure_after_first_token_aborts_the_response(
    proxy: ProxyServer, marker: str, fault: str
) -> None:
    prompt = f"{marker} @text=tricky @fault={fault} @after=3"
    status, text = await read_until_aborted(proxy, prompt)
    assert status == 200
    tokens = 12 if fault in ("no-end", "malformed") else 3
    assert reply_text(prompt, tokens).encode().startswith(text)
    assert text, "the text before the failure was not relayed"


async def test_total_timeout_aborts_a_long_stream(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(total_timeout=0.5, idle_timeout=5)
    status, text = await read_until_aborted(proxy, f"{marker} @tokens=100 @delay=0.05")
    assert status == 200
    assert text


async def test_client_disconnect_closes_upstream_within_100ms(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    await disconnect_after_first_chunk(proxy, upstream, f"{marker} @tokens=1000 @delay=0.05")


async def test_client_disconnect_from_bursty_upstream_closes_it_within_100ms(
    upstream: FakeUpstreamServer, marker: str
) -> None:
    # Thousands of events already buffered: the proxy never waits on the upstream socket.
    # The proxy runs in its own process, as deployed: in this one, the fake's busy thread
    # would hold the GIL against the proxy's and time the interpreter, not the proxy.
    proxy = ProxyProcess(PROXY_UPSTREAM_URL=upstream.url)
    try:
        await disconnect_after_first_chunk(proxy, upstream, f"{marker} @tokens=2000000 @delay=0")
    finally:
        proxy.close()


async def test_client_disconnect_before_first_token_closes_upstream_within_100ms(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    client = httpx.AsyncClient(base_url=proxy.url)
    request = asyncio.create_task(
        client.post("/v1/stream", json={"prompt": f"{marker} @fault=hang-before"})
    )
    await upstream.wait_received(marker)
    request.cancel()
    closed_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await request
    await client.aclose()
    record = await upstream.wait_disconnected(marker)
    assert record.disconnected_at is not None
    assert record.disconnected_at - closed_at < 0.1


async def disconnect_after_first_chunk(
    proxy: ProxyServer | ProxyProcess, upstream: FakeUpstreamServer, prompt: str
) -> None:
    marker = prompt.split()[0]
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.send(
            client.build_request("POST", "/v1/stream", json={"prompt": prompt}), stream=True
        )
        assert response.status_code == 200
        await anext(response.aiter_raw())
        closed_at = time.monotonic()
        await response.aclose()  # unread body: httpx closes the connection
    record = await upstream.wait_disconnected(marker)
    assert record.disconnected_at is not None
    assert record.disconnected_at - closed_at < 0.1


async def test_200_concurrent_streams_are_all_exact(proxy: ProxyServer, marker: str) -> None:
    prompts = [f"{marker}-{i} @text=tricky @tokens=20 @delay=0.01" for i in range(200)]
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=proxy.url, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/stream", json={"prompt": prompt}) for prompt in prompts)
        )
    for prompt, response in zip(prompts, responses, strict=True):
        assert response.status_code == 200
        assert response.text == reply_text(prompt, 20)


async def test_early_disconnects_leak_no_upstream_connections(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    # Every one of the 150 upstream connections must be seen closed by the upstream itself,
    # and a stream cap of 16 would refuse new streams if any slot had leaked.
    proxy = start_proxy(max_concurrent_streams=16, connect_timeout=1.0)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        for i in range(150):
            async with client.stream(
                "POST", "/v1/stream", json={"prompt": f"{marker}-{i} @tokens=1000 @delay=0.01"}
            ) as response:
                await anext(response.aiter_raw())
        for i in range(150):
            await upstream.wait_disconnected(f"{marker}-{i} ")
        prompt = f"{marker}-after @text=tricky"
        response = await client.post("/v1/stream", json={"prompt": prompt})
    assert response.status_code == 200
    assert response.text == reply_text(prompt, 12)
