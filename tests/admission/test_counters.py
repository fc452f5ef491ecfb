"""Open streams per client (proxy/admission/counters.py), in memory and in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as redis

from proxy.admission.counters import MemoryStreamCounter, RedisStreamCounter, StreamCounter
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


async def check_counter(counter: StreamCounter) -> None:
    assert await counter.acquire("a", 2)
    assert await counter.acquire("a", 2)
    assert not await counter.acquire("a", 2)  # at its limit
    assert await counter.acquire("b", 2)  # another client's count is its own
    await counter.release("a")
    assert await counter.acquire("a", 2)
    for client in ("a", "a", "b"):
        await counter.release(client)
    await counter.aclose()


async def test_memory_counts_each_clients_open_streams() -> None:
    await check_counter(MemoryStreamCounter())


async def test_redis_counts_each_clients_open_streams(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        await check_counter(RedisStreamCounter(client, expiry=60))
        assert [key async for key in client.scan_iter("llm-stream-proxy:stream-slots:*")] == []
    finally:
        await client.aclose()


async def test_a_release_without_a_held_slot_frees_nothing(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        counter = RedisStreamCounter(client, expiry=60)
        assert await counter.acquire("c", 1)
        await counter.release("d")  # nobody's slot
        assert not await counter.acquire("c", 1)
        await counter.release("c")
    finally:
        await client.aclose()
