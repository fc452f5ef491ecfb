"""Issue 13's resume stores, in memory and in a real redis-server: replay, follow, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis

from proxy.errors import InvalidRequest, NotFound, StreamLost, UpstreamTimeout, error_body
from proxy.parts import characters
from proxy.resume import MemoryResumeStore, RedisResumeStore, ResumeStore, StoredPart
from proxy.resume.base import StoredItem, StoredStream
from proxy.resume.redis_store import PREFIX
from proxy.values import Done, Failed, Usage
from tests.redis_server import RedisServer

TTL = 60.0
CAP = 4096
DONE = Done("stop", Usage(prompt_tokens=3, completion_tokens=9))
DELTAS = ["Hel", "lo, ", "wörld", " 🙂", "\r\n", "\u2028", "𝄞!"]
TEXT = "".join(DELTAS)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


def new_store(
    backend: str, redis_server: RedisServer, *, ttl: float = TTL, follow_timeout: float = 5.0
) -> ResumeStore:
    if backend == "redis":
        return RedisResumeStore.from_url(redis_server.url, ttl, CAP, follow_timeout)
    return MemoryResumeStore(ttl, CAP, follow_timeout)


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[ResumeStore]:
    opened = new_store(request.param, redis_server)
    yield opened
    await opened.aclose()


@pytest.fixture
def stream_id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def stored(store: ResumeStore, stream_id: str, deltas: list[str], outcome: Done) -> None:
    writer = await store.start(stream_id, "client-a", {"request_id": "req-1"})
    for text in deltas:
        writer.append(text)
    await writer.end(outcome)


async def read_all(stream: StoredStream, offset: int) -> tuple[str, StoredItem]:
    """The text from offset, and the end marker that closed it."""
    text = ""
    async for item in stream.follow(offset):
        if not isinstance(item, StoredPart):
            return text, item
        text += characters(item.part)
    raise AssertionError("the stream ended without its end marker")


async def test_replay_from_every_offset_is_exactly_the_rest_of_the_text(
    store: ResumeStore, stream_id: str
) -> None:
    await stored(store, stream_id, DELTAS, DONE)
    found = await store.find(stream_id, "client-a")
    assert not found.active
    assert found.attributes["request_id"] == "req-1"
    for offset in range(len(TEXT) + 1):  # in characters: inside deltas, between them, the end
        assert await read_all(found, offset) == (TEXT[offset:], DONE)


async def test_replay_then_follow_live_until_the_end(store: ResumeStore, stream_id: str) -> None:
    writer = await store.start(stream_id, "client-a", {})
    writer.append("Hello")
    found = await store.find(stream_id, "client-a")
    assert found.active
    items = found.follow(2)
    assert await anext(items) == StoredPart("llo", 5)
    writer.append(" world")
    assert await anext(items) == StoredPart(" world", 11)
    await writer.end(DONE)
    assert await anext(items) == DONE
    with pytest.raises(StopAsyncIteration):
        await anext(items)


async def test_a_failed_stream_replays_its_text_then_its_error(
    store: ResumeStore, stream_id: str
) -> None:
    failed = Failed(error_body(UpstreamTimeout("no text from upstream for 30 s"), "req-1"))
    writer = await store.start(stream_id, "client-a", {})
    writer.append("partial")
    await writer.end(failed)
    found = await store.find(stream_id, "client-a")
    assert await read_all(found, 0) == ("partial", failed)


async def test_an_empty_stream_replays_just_its_end(store: ResumeStore, stream_id: str) -> None:
    await stored(store, stream_id, [], Done())
    assert await read_all(await store.find(stream_id, "client-a"), 0) == ("", Done())


async def test_another_client_or_an_unknown_id_is_not_found(
    store: ResumeStore, stream_id: str
) -> None:
    await stored(store, stream_id, DELTAS, DONE)
    with pytest.raises(NotFound):
        await store.find(stream_id, "client-b")
    with pytest.raises(NotFound):
        await store.find(stream_id + "-other", "client-a")


async def test_an_offset_past_the_end_of_a_finished_stream_is_refused(
    store: ResumeStore, stream_id: str
) -> None:
    await stored(store, stream_id, DELTAS, DONE)
    found = await store.find(stream_id, "client-a")
    with pytest.raises(InvalidRequest):
        await read_all(found, len(TEXT) + 1)


async def test_a_new_stream_under_the_same_id_replaces_the_old_one(
    store: ResumeStore, stream_id: str
) -> None:
    first = await store.start(stream_id, "client-a", {"turn": "1"})
    first.append("first answer")
    old = await store.find(stream_id, "client-a")
    await stored(store, stream_id, ["second"], DONE)
    await first.end(DONE)  # the old producer finishing does not touch the new stream
    new = await store.find(stream_id, "client-a")
    assert new.attributes.get("turn") is None
    assert await read_all(new, 0) == ("second", DONE)
    assert await read_all(old, 0) == ("first answer", DONE)


async def test_text_past_the_byte_cap_is_not_kept_and_a_resume_ends_in_an_error(
    store: ResumeStore, stream_id: str
) -> None:
    chunk = "é" * 1000  # 2000 bytes: the third one passes the 4096-byte cap
    await stored(store, stream_id, [chunk] * 5, DONE)
    text, end = await read_all(await store.find(stream_id, "client-a"), 0)
    assert text == chunk * 2
    assert isinstance(end, Failed)
    assert end.error["error"]["type"] == "resume_too_large"
    assert end.error["error"]["request_id"] == "req-1"


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_reader_of_a_producer_that_died_gets_stream_lost(
    backend: str, redis_server: RedisServer, stream_id: str
) -> None:
    store = new_store(backend, redis_server, follow_timeout=0.2)
    try:
        writer = await store.start(stream_id, "client-a", {})
        writer.append("abandoned")
        found = await store.find(stream_id, "client-a")
        with pytest.raises(StreamLost):
            await read_all(found, 0)
    finally:
        await store.aclose()


async def test_memory_streams_expire_after_the_ttl_from_their_last_write(stream_id: str) -> None:
    now = [1000.0]
    store = MemoryResumeStore(10.0, CAP, 5.0, clock=lambda: now[0])
    writer = await store.start(stream_id, "client-a", {})
    now[0] += 8
    writer.append("still going")  # a write keeps it alive
    now[0] += 8
    await store.find(stream_id, "client-a")
    await writer.end(DONE)
    now[0] += 10
    with pytest.raises(NotFound):
        await store.find(stream_id, "client-a")
    assert len(store) == 0


async def test_redis_entries_carry_the_ttl_and_expire(
    redis_server: RedisServer, stream_id: str
) -> None:
    store = RedisResumeStore.from_url(redis_server.url, 0.5, CAP, 5.0)
    inspect = redis.Redis.from_url(redis_server.url)
    expirations = inspect.pubsub()
    try:
        # Redis announces each key it expires: wait for those events, not for the clock.
        await inspect.config_set("notify-keyspace-events", "Ex")
        await expirations.subscribe("__keyevent@0__:expired")
        await stored(store, stream_id, DELTAS, DONE)
        keys = set(await inspect.keys(f"{PREFIX}{stream_id}*"))
        assert len(keys) == 2  # the owner hash and the text
        for key in keys:
            assert 0 < await inspect.pttl(key) <= 500
        async with asyncio.timeout(10):
            while keys:
                message = await expirations.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    keys.discard(message["data"])
        with pytest.raises(NotFound):
            await store.find(stream_id, "client-a")
    finally:
        await expirations.aclose()
        await inspect.aclose()
        await store.aclose()


async def test_a_second_redis_store_follows_what_the_first_writes(
    redis_server: RedisServer, stream_id: str
) -> None:
    """Two proxy replicas: one produces, the other serves the resume."""
    producer = RedisResumeStore.from_url(redis_server.url, TTL, CAP, 5.0)
    replica = RedisResumeStore.from_url(redis_server.url, TTL, CAP, 5.0)
    try:
        writer = await producer.start(stream_id, "client-a", {"message_id": "m1"})
        writer.append("one ")
        found = await replica.find(stream_id, "client-a")
        assert found.attributes == {"message_id": "m1"}
        items = found.follow(0)
        assert await anext(items) == StoredPart("one ", 4)
        writer.append("two")
        assert await anext(items) == StoredPart("two", 7)
        await writer.end(DONE)
        assert await anext(items) == DONE
    finally:
        await producer.aclose()
        await replica.aclose()
