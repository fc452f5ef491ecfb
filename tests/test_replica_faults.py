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
    client: httpx.AsyncClient, prompt: str, headers: dict[str, str], base: str = ""
) -> AsyncIterator[TextReader]:
    """A stream POSTed to base (default: the client's base URL), read by the caller."""
    async with client.stream(
        "POST", f"{base}/v1/stream", json={"prompt": prompt}, headers=headers
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


# --- a replica drained ----------------------------------------------------------------------


async def test_a_drained_replica_finishes_its_stream_while_new_ones_go_to_the_other(
    start_replicas: Callable[..., Replicas], marker: str
) -> None:
    replicas = start_replicas()
    prompt = f"{marker} @tokens=60 @delay=0.05"
    async with (
        httpx.AsyncClient(base_url=replicas.nginx.url, timeout=30) as client,
        text_stream(client, prompt, auth("key-a")) as draining,
    ):
        await draining.read_at_least(5)
        drained = await replicas.owner_of_the_stream()
        other = replicas.other_than(drained)
        drained.send_signal(signal.SIGTERM)
        await asyncio.to_thread(drained.wait_for_line, "Shutting down")

        new_ids = [f"{marker}-new-{i}" for i in range(6)]
        news = [
            await client.post(
                "/v1/stream",
                json={"prompt": f"{request_id} @tokens=5"},
                headers=auth("key-b", **{"X-Request-ID": request_id}),
            )
            for request_id in new_ids
        ]
        text = await draining.read_to_end()  # a clean end: no transport error

    assert text == reply_text(prompt, 60)
    assert [r.status_code for r in news] == [200] * len(new_ids)
    assert [r.text for r in news] == [reply_text(f"{i} @tokens=5", 5) for i in new_ids]
    for request_id in new_ids:
        await asyncio.to_thread(other.wait_for_line, f"stream request_id={request_id} ")
    assert await asyncio.to_thread(drained.wait, 40) == 0
    served_by_drained = [line for line in drained.lines if "outcome=" in line]
    assert len(served_by_drained) == 1
    assert "outcome=completed" in served_by_drained[0]


# --- limits across replicas -----------------------------------------------------------------


async def test_a_per_key_stream_limit_holds_across_replicas(
    start_replicas: Callable[..., Replicas], marker: str
) -> None:
    replicas = start_replicas(PROXY_MAX_STREAMS_PER_KEY="2")
    prompt = f"{marker} @tokens=200 @delay=0.05"
    async with httpx.AsyncClient(timeout=30) as client, contextlib.AsyncExitStack() as open_:
        readers = [  # key-a's two streams, one on each replica, kept open (and referenced)
            await open_.enter_async_context(
                text_stream(client, f"{prompt} {proxy.port}", auth("key-a"), proxy.url)
            )
            for proxy in replicas.proxies
        ]
        for reader in readers:
            await reader.read_at_least(1)
        over = [
            await client.post(f"{proxy.url}/v1/stream", json={"prompt": marker}, headers=h)
            for proxy in replicas.proxies
            for h in (auth("key-a"), auth("key-b"))
        ]
    assert [r.status_code for r in over] == [429, 200, 429, 200]
    assert over[0].json()["error"]["type"] == "rate_limited"


# --- Redis restarted mid-run ----------------------------------------------------------------


async def ended(proxy: ProxyProcess, request_id: str) -> str:
    """The stream's log line: written once its session has freed its slots."""
    return await asyncio.to_thread(proxy.wait_for_line, f"stream request_id={request_id} ")


async def one_stream(client: httpx.AsyncClient, proxy: ProxyProcess, request_id: str) -> int:
    """key-b's status for one short stream, once it has freed its slot
    (PROXY_MAX_STREAMS_PER_KEY=1 would refuse the next one else)."""
    response = await client.post(
        f"{proxy.url}/v1/stream",
        json={"prompt": request_id},
        headers=auth("key-b", **{"X-Request-ID": request_id}),
    )
    await ended(proxy, request_id)
    return response.status_code


async def test_after_a_redis_restart_streams_complete_and_limits_and_resume_recover(
    start_replicas: Callable[..., Replicas], marker: str
) -> None:
    rate = 6
    replicas = start_replicas(PROXY_MAX_STREAMS_PER_KEY="1", PROXY_RATE_LIMIT=f"{rate}/minute")
    first, second = replicas.proxies
    in_flight = f"{marker} @tokens=60 @delay=0.05"
    async with httpx.AsyncClient(timeout=30) as client:
        spent = [
            await one_stream(client, replicas.proxies[i % 2], f"{marker}-before-{i}")
            for i in range(3)
        ]
        assert spent == [200] * 3  # key-b's window, forgotten by the restart
        async with text_stream(
            client, in_flight, auth("key-a", **{"X-Request-ID": marker}), first.url
        ) as reader:
            await reader.read_at_least(5)
            replicas.redis.restart()  # SIGKILL, and back empty on the same port
            # The stream in flight completes: Redis holds none of its text on its path.
            assert await reader.read_to_end() == reply_text(in_flight, 60)
        assert "outcome=completed" in await ended(first, marker)

        # What was stored before the restart is gone: a resume is a 404, never a hang.
        lost = await client.get(f"{second.url}/v1/stream/{marker}", headers=auth("key-a"))
        assert lost.status_code == 404

        # The per-key stream limit holds again, across replicas: the stream that outlived
        # the restart gave back no slot it does not hold in the new Redis.
        holding = f"{marker}-holding @tokens=40 @delay=0.05"
        headers = auth("key-a", **{"X-Request-ID": f"{marker}-holding"})
        async with text_stream(client, holding, headers, first.url) as reader:
            await reader.read_at_least(1)
            refused = await client.post(
                f"{second.url}/v1/stream", json={"prompt": marker}, headers=auth("key-a")
            )
            assert refused.status_code == 429
            await reader.read_to_end()
        await ended(first, f"{marker}-holding")

        # Resume works again: a stream stored in the new Redis, resumed on the other replica.
        resumable = f"{marker}-after @tokens=8"
        request_id = f"{marker}-after"
        started = await client.post(
            f"{first.url}/v1/stream",
            json={"prompt": resumable},
            headers=auth("key-a", **{"X-Request-ID": request_id}),
        )
        assert started.text == reply_text(resumable, 8)
        await ended(first, request_id)
        resumed = await client.get(f"{second.url}/v1/stream/{request_id}", headers=auth("key-a"))
        assert resumed.status_code == 200
        assert resumed.text == reply_text(resumable, 8)

        # The rate limit counts again from zero (the documented direction: a restart forgets
        # the window), and holds at its limit.
        statuses = [
            await one_stream(client, replicas.proxies[i % 2], f"{marker}-{i}")
            for i in range(rate + 1)
        ]
    assert statuses == [200] * rate + [429]
