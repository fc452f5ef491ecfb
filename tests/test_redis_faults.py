"""Every Redis fault ends a stream honestly, and no slot outlives its stream (issue 25).

A real redis-server and `python -m proxy serve` processes on loopback: Redis is killed under
a resume, and made to answer late (a Lua script that keeps it busy, as a loaded machine
does) under an admission. The proxy's own log is read too: never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as redis

from proxy.admission import client_id
from proxy.fake_upstream import reply_text
from tests.redis_server import RedisServer
from tests.servers import FakeUpstreamServer, ProxyProcess
from tests.test_formats import sse_events

KEY = "key-a"
SSE = "text/event-stream"
SLOT_KEY = f"llm-stream-proxy:stream-slots:{client_id(KEY)}"
# Holds Redis's one thread for ARGV[1] microseconds: every command sent meanwhile is
# answered late, after the proxy's Redis timeout, as on a busy machine.
BUSY = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1])
return 1
"""


def auth(**headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **headers}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    with contextlib.suppress(Exception):
        server.kill()


@contextlib.contextmanager
def proxy_process(
    upstream: FakeUpstreamServer, redis_url: str, **env: str
) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(
        PROXY_UPSTREAM_URL=upstream.url,
        PROXY_REDIS_URL=redis_url,
        PROXY_API_KEYS=KEY,
        PROXY_IDLE_TIMEOUT="2",
        **env,
    )
    try:
        yield proxy
    finally:
        proxy.close()
        assert_no_traceback(proxy)


def assert_no_traceback(proxy: ProxyProcess) -> None:
    log = "".join(proxy.lines)
    assert "Traceback" not in log, log


async def warnings(proxy: ProxyProcess, text: str, expected: int) -> int:
    """How many lines of the proxy's log hold text, once it wrote `expected` (or 5 s)."""
    for _ in range(100):
        found = sum(text in line for line in proxy.lines)
        if found >= expected:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and none more
    return sum(text in line for line in proxy.lines)


async def ended(proxy: ProxyProcess, request_id: str) -> str:
    return await asyncio.to_thread(proxy.wait_for_line, f"stream request_id={request_id} ")


async def test_a_resume_while_redis_is_down_is_a_json_503_with_its_request_id(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    with proxy_process(upstream, redis_server.url, PROXY_RESUME="true") as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            prompt = f"{marker} @tokens=5"
            started = await client.post(
                "/v1/stream", json={"prompt": prompt}, headers=auth(**{"X-Request-ID": marker})
            )
            assert started.text == reply_text(prompt, 5)
            await ended(proxy, marker)
            redis_server.kill()
            resumes = [
                await client.get(
                    f"/v1/stream/{marker}", headers=auth(**{"X-Request-ID": f"{marker}-r{i}"})
                )
                for i in range(2)  # the second after redis-py's pool has seen it go
            ]
            assert await warnings(proxy, "redis unavailable while finding", 2) == 2  # one each
    for i, resumed in enumerate(resumes):
        assert resumed.status_code == 503, resumed.text
        assert resumed.headers["content-type"] == "application/json"
        assert int(resumed.headers["retry-after"]) >= 1
        error = resumed.json()["error"]
        assert error["type"] == "redis_unavailable"
        assert error["request_id"] == f"{marker}-r{i}"


async def test_a_resume_while_redis_does_not_answer_is_a_503_within_its_bound(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    busier = redis.Redis.from_url(redis_server.url)
    with proxy_process(upstream, redis_server.url, PROXY_RESUME="true") as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            busy = asyncio.create_task(busier.eval(BUSY, 0, 4_000_000))  # 4 s
            await asyncio.sleep(0.1)  # the busy script has Redis's one thread
            asked = time.monotonic()
            resumed = await client.get(f"/v1/stream/{marker}", headers=auth())
            took = time.monotonic() - asked
            await busy
    await busier.aclose()
    assert resumed.status_code == 503
    assert resumed.json()["error"]["type"] == "redis_unavailable"
    assert took < 3.5  # the store's 2 s bound, not its socket's (idle timeout + 10 s)


async def test_a_followed_sse_resume_whose_redis_dies_ends_with_an_error_event(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    prompt = f"{marker} @tokens=400 @delay=0.02"
    with proxy_process(upstream, redis_server.url, PROXY_RESUME="true") as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            headers = auth(**{"X-Request-ID": marker})
            async with client.stream(
                "POST", "/v1/stream", json={"prompt": prompt}, headers=headers
            ) as live:
                assert live.status_code == 200
                body, killed = b"", False
                async with client.stream(
                    "GET", f"/v1/stream/{marker}", headers=auth(Accept=SSE)
                ) as resumed:
                    assert resumed.status_code == 200
                    async for chunk in resumed.aiter_raw():
                        body += chunk
                        if b"event: delta" in body and not killed:
                            redis_server.kill()  # under the resume, following live
                            killed = True
                await live.aread()  # the stream itself is not Redis's: it completes
                assert live.text == reply_text(prompt, 400)
    events = sse_events(body)
    *deltas, last = events
    assert {event["event"] for event in deltas} == {"delta"}
    assert last["event"] == "error", events[-3:]
    assert last["data"]["error"]["type"] == "redis_unavailable"


async def slot_count(client: redis.Redis) -> int:
    return int(await client.zcard(SLOT_KEY))


async def test_a_late_admission_answer_leaves_no_slot_and_the_key_can_still_open_its_limit(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    watcher = redis.Redis.from_url(redis_server.url)
    env = {"PROXY_MAX_STREAMS_PER_KEY": "2", "PROXY_REDIS_TIMEOUT": "0.25"}
    with proxy_process(upstream, redis_server.url, **env) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            warm = await client.post("/v1/stream", json={"prompt": marker}, headers=auth())
            assert warm.status_code == 200  # the admission script is loaded, connections open
            busy = asyncio.create_task(watcher.eval(BUSY, 0, 1_000_000))
            await asyncio.sleep(0.1)  # the busy script has Redis's thread
            late_id = f"{marker}-late"
            prompt = f"{late_id} @tokens=3"
            served = await client.post(
                "/v1/stream", json={"prompt": prompt}, headers=auth(**{"X-Request-ID": late_id})
            )
            assert served.text == reply_text(prompt, 3)  # served without limits, as documented
            assert not busy.done()  # its admission really was answered late
            await busy
            await ended(proxy, late_id)
            for _ in range(40):  # whatever the late script did is undone at once, not in 100 s
                if await slot_count(watcher) == 0:
                    break
                await asyncio.sleep(0.05)
            assert await slot_count(watcher) == 0

            held = f"{marker} @tokens=100 @delay=0.05"
            async with (
                client.stream("POST", "/v1/stream", json={"prompt": held}, headers=auth()) as a,
                client.stream("POST", "/v1/stream", json={"prompt": held}, headers=auth()) as b,
            ):
                statuses = [a.status_code, b.status_code]
                third = await client.post("/v1/stream", json={"prompt": marker}, headers=auth())
    await watcher.aclose()
    assert statuses == [200, 200]
    assert third.status_code == 429
