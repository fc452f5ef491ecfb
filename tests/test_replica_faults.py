"""Replicas that survive each other's faults (issue 20), for real on loopback.

Two `python -m proxy serve` processes with resume on share one redis-server, behind nginx
running docker/nginx.conf, as the Kubernetes base runs them behind its Service and Ingress.
Each test kills, drains or restarts one part and watches what every client sees. Pacing comes
from the fake upstream's directives; every wait is for an event (a line, a chunk, an exit)
with a bound, never a sleep standing in for one.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.fake_upstream import reply_text
from tests.nginx_server import Nginx
from tests.redis_server import RedisServer
from tests.servers import FakeUpstreamServer, ProxyProcess
from tests.test_formats import sse_events

KEYS = ("key-a", "key-b")
IDLE_TIMEOUT_S = 2  # PROXY_IDLE_TIMEOUT of the replicas: a resumer gives up after it + 5 s
FOLLOW_TIMEOUT_S = IDLE_TIMEOUT_S + 5
SLACK_S = 5  # a shared, noisy 2-core machine: bounds are generous, never tight
SSE = "text/event-stream"


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


@dataclass
class Replicas:
    redis: RedisServer
    proxies: list[ProxyProcess]
    nginx: Nginx

    async def owner_of_the_stream(self) -> ProxyProcess:
        """The one replica with a stream in flight (its gauge is set before the commit)."""
        owners = []
        async with httpx.AsyncClient(timeout=10) as client:
            for proxy in self.proxies:
                metrics = (await client.get(f"{proxy.url}/metrics")).text
                gauge = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("llm_proxy_streams_in_flight{")
                ]
                if any(float(line.rsplit(" ", 1)[1]) > 0 for line in gauge):
                    owners.append(proxy)
        (owner,) = owners
        return owner

    def other_than(self, proxy: ProxyProcess) -> ProxyProcess:
        (other,) = [p for p in self.proxies if p is not proxy]
        return other


@pytest.fixture
def start_replicas(
    upstream: FakeUpstreamServer, tmp_path: Path
) -> Iterator[Callable[..., Replicas]]:
    started: list[Replicas] = []

    def start(**environment: str) -> Replicas:
        redis = RedisServer()
        settings = {
            "PROXY_UPSTREAM_URL": upstream.url,
            "PROXY_REDIS_URL": redis.url,
            "PROXY_RESUME": "true",
            "PROXY_API_KEYS": ",".join(KEYS),
            "PROXY_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
            "PROXY_SHUTDOWN_GRACE": "30",
            **environment,
        }
        proxies = [ProxyProcess(**settings) for _ in range(2)]
        replicas = Replicas(redis, proxies, Nginx([p.port for p in proxies], tmp_path))
        started.append(replicas)
        return replicas

    yield start
    for replicas in started:
        replicas.nginx.close()
        for proxy in replicas.proxies:
            proxy.close()
        replicas.redis.kill()


class TextReader:
    """One raw-text stream, read chunk by chunk: what a frontend's fetch sees."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.text = ""
        self._chunks = response.aiter_raw()
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    async def read_at_least(self, characters: int) -> None:
        async for chunk in self._chunks:
            self.text += self._decoder.decode(chunk)
            if len(self.text) >= characters:
                return
        raise AssertionError(f"the stream ended after {self.text!r}")

    async def read_to_end(self) -> str:
        async for chunk in self._chunks:
            self.text += self._decoder.decode(chunk)
        return self.text


@contextlib.asynccontextmanager
async def text_stream(
    client: httpx.AsyncClient, prompt: str, headers: dict[str, str]
) -> AsyncIterator[TextReader]:
    async with client.stream(
        "POST", "/v1/stream", json={"prompt": prompt}, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        yield TextReader(response)


async def sse_resume(
    client: httpx.AsyncClient, stream_id: str, offset: int, following: asyncio.Event | None = None
) -> list[dict[str, Any]]:
    """A resume as SSE, to its end: its events (a failure is an explicit `error` event)."""
    body = b""
    async with client.stream(
        "GET",
        f"/v1/stream/{stream_id}",
        params={"offset": offset},
        headers=auth("key-a", Accept=SSE),
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_raw():
            body += chunk
            if following is not None and b"event: delta" in body:
                following.set()
    return sse_events(body)


async def raw_resume(
    client: httpx.AsyncClient, stream_id: str, offset: int
) -> tuple[str, httpx.TransportError | None]:
    """A resume as raw text: the text it gave, and the abort that ended it (None: clean)."""
    async with client.stream(
        "GET", f"/v1/stream/{stream_id}", params={"offset": offset}, headers=auth("key-a")
    ) as response:
        assert response.status_code == 200, await response.aread()
        reader = TextReader(response)
        try:
            await reader.read_to_end()
        except httpx.TransportError as abort:
            return reader.text, abort
    return reader.text, None


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["text"] for e in events if e["event"] == "delta")


def assert_ends_in_stream_lost(events: list[dict[str, Any]]) -> None:
    *deltas, last = events
    assert {e["event"] for e in deltas} <= {"delta"}
    assert last["event"] == "error"
    assert last["data"]["error"]["type"] == "stream_lost"


# --- a replica killed mid-stream ----------------------------------------------------------


async def test_a_replica_killed_mid_stream_aborts_its_client_and_a_resume_elsewhere_ends_in_error(
    start_replicas: Callable[..., Replicas], marker: str
) -> None:
    replicas = start_replicas()
    prompt = f"{marker} @tokens=2000 @delay=0.05"
    full = reply_text(prompt, 2000)
    headers = auth("key-a", **{"X-Request-ID": marker})
    async with (
        httpx.AsyncClient(base_url=replicas.nginx.url, timeout=30) as client,
        text_stream(client, prompt, headers) as reader,
    ):
        await reader.read_at_least(10)
        victim = await replicas.owner_of_the_stream()
        survivor = replicas.other_than(victim)
        async with httpx.AsyncClient(base_url=survivor.url, timeout=60) as resumer:
            # A resumer on the other replica follows the stream live from its start...
            following = asyncio.Event()
            live = asyncio.create_task(sse_resume(resumer, marker, 0, following))
            await asyncio.wait_for(following.wait(), 10)

            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            # ...the stream's own client, through nginx, sees an abort, never a clean end...
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await reader.read_to_end()
            assert full.startswith(reader.text)
            assert len(reader.text) < len(full)

            # ...and a resume asked for after the kill, from where that client was, gets the
            # stored text past its offset and then an abort (raw text's explicit failure).
            had = len(reader.text)
            asked_at = time.monotonic()
            rest, abort = await raw_resume(resumer, marker, had)
            resume_took = time.monotonic() - asked_at
            live_events = await asyncio.wait_for(live, FOLLOW_TIMEOUT_S + SLACK_S)
            lost_after = time.monotonic() - killed_at

    assert isinstance(abort, httpx.RemoteProtocolError)
    assert full.startswith(reader.text + rest)
    assert resume_took < FOLLOW_TIMEOUT_S + SLACK_S
    assert_ends_in_stream_lost(live_events)
    assert text_of(live_events)  # the text stored before the kill came first
    assert full.startswith(text_of(live_events))
    assert lost_after < FOLLOW_TIMEOUT_S + SLACK_S
    assert await asyncio.to_thread(victim.wait, 5) == -signal.SIGKILL
