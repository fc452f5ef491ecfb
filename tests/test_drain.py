"""SIGTERM: stop accepting, let open streams finish within PROXY_SHUTDOWN_GRACE, abort the rest.

The proxy runs as deployed, `python -m proxy serve` in its own process, in front of the fake
upstream on a real loopback socket.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from proxy.fake_upstream import reply_text
from tests.servers import FakeUpstreamServer, ProxyProcess


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def processes() -> Iterator[list[ProxyProcess]]:
    started: list[ProxyProcess] = []
    yield started
    for process in started:
        process.close()


def start(processes: list[ProxyProcess], upstream: FakeUpstreamServer, **env: str) -> ProxyProcess:
    process = ProxyProcess(PROXY_UPSTREAM_URL=upstream.url, **env)
    processes.append(process)
    return process


class OpenStream:
    """A stream past its commit point: its first chunk has arrived."""

    def __init__(self, response: httpx.Response, chunks: AsyncIterator[bytes], first: bytes):
        self.response = response
        self.chunks = chunks  # one iterator for the whole body: dropping one closes the stream
        self.first = first

    async def read_rest(self) -> str:
        body = self.first
        async for chunk in self.chunks:
            body += chunk
        await self.response.aclose()
        return body.decode()

    async def read_until_aborted(self) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            async for _ in self.chunks:
                pass
        await self.response.aclose()


async def wait_until_listening(client: httpx.AsyncClient, proxy: ProxyProcess) -> None:
    """Workers listen only once they have started, after the parent said it was running."""
    for _ in range(200):
        try:
            await client.get(f"{proxy.url}/healthz")
            return
        except httpx.ConnectError:
            await asyncio.sleep(0.05)
    raise AssertionError("no worker listened")


async def open_stream(client: httpx.AsyncClient, proxy: ProxyProcess, prompt: str) -> OpenStream:
    request = client.build_request("POST", f"{proxy.url}/v1/stream", json={"prompt": prompt})
    response = await client.send(request, stream=True)
    assert response.status_code == 200
    chunks = response.aiter_raw()
    return OpenStream(response, chunks, await anext(chunks))


async def test_sigterm_lets_open_streams_finish_refuses_new_connections_and_exits_0(
    upstream: FakeUpstreamServer,
    client: httpx.AsyncClient,
    processes: list[ProxyProcess],
    marker: str,
) -> None:
    proxy = start(processes, upstream, PROXY_SHUTDOWN_GRACE="30")
    prompts = [f"{marker}-{i} @tokens=20 @delay=0.1" for i in range(3)]
    streams = [await open_stream(client, proxy, prompt) for prompt in prompts]

    proxy.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proxy.wait_for_line, "Waiting for connections to close")
    with pytest.raises(httpx.ConnectError):
        await client.get(f"{proxy.url}/healthz")

    texts = [await stream.read_rest() for stream in streams]
    assert texts == [reply_text(prompt, 20) for prompt in prompts]
    assert await asyncio.to_thread(proxy.wait, 15) == 0


async def test_streams_longer_than_the_grace_are_aborted_and_the_process_exits_in_time(
    upstream: FakeUpstreamServer,
    client: httpx.AsyncClient,
    processes: list[ProxyProcess],
    marker: str,
) -> None:
    grace = 1
    proxy = start(processes, upstream, PROXY_SHUTDOWN_GRACE=str(grace))
    prompts = [f"{marker}-{i} @tokens=1000 @delay=0.05" for i in range(3)]
    streams = [await open_stream(client, proxy, prompt) for prompt in prompts]

    signalled = time.monotonic()
    proxy.send_signal(signal.SIGTERM)
    for stream in streams:
        await stream.read_until_aborted()
    assert await asyncio.to_thread(proxy.wait, grace + 5) == 0
    assert time.monotonic() - signalled < grace + 1

    for prompt in prompts:  # the proxy let go of each upstream request
        record = await upstream.wait_disconnected(prompt.split()[0] + " ")
        assert record.disconnected_at is not None
    stream_lines = [line for line in proxy.lines if " stream " in line]
    assert len(stream_lines) == 3
    assert all("outcome=shutdown" in line for line in stream_lines)
    assert not any("Traceback" in line for line in proxy.lines)


async def test_a_request_still_waiting_for_its_first_token_gets_503_at_the_end_of_the_grace(
    upstream: FakeUpstreamServer,
    client: httpx.AsyncClient,
    processes: list[ProxyProcess],
    marker: str,
) -> None:
    proxy = start(processes, upstream, PROXY_SHUTDOWN_GRACE="1")
    waiting = asyncio.create_task(
        client.post(
            f"{proxy.url}/v1/stream",
            json={"prompt": f"{marker} @fault=hang-before"},
            headers={"X-Request-ID": marker},
        )
    )
    await upstream.wait_received(marker)
    proxy.send_signal(signal.SIGTERM)
    response = await waiting
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "shutting_down"
    assert response.json()["error"]["request_id"] == marker
    assert response.headers["X-Request-ID"] == marker
    assert await asyncio.to_thread(proxy.wait, 10) == 0


async def test_each_worker_drains_when_there_are_several(
    upstream: FakeUpstreamServer,
    client: httpx.AsyncClient,
    processes: list[ProxyProcess],
    marker: str,
) -> None:
    proxy = start(processes, upstream, PROXY_WORKERS="2", PROXY_SHUTDOWN_GRACE="2")
    await wait_until_listening(client, proxy)
    short, long = f"{marker}-short @tokens=10 @delay=0.05", f"{marker}-long @tokens=1000"
    finishing = await open_stream(client, proxy, short)
    aborted = await open_stream(client, proxy, long + " @delay=0.05")

    proxy.send_signal(signal.SIGTERM)
    assert await finishing.read_rest() == reply_text(short, 10)
    await aborted.read_until_aborted()
    assert await asyncio.to_thread(proxy.wait, 15) == 0
