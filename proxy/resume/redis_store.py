"""Stored streams in Redis: any proxy replica sharing the Redis can serve a resume.

Keys, under `llm-stream-proxy:resume:`:

    {id}               hash: owner, generation, attributes (JSON); the stream's current owner
    {id}:{generation}  Redis Stream of the parts: one entry per batch of parts of one kind,
                       `t` = text or `r` = reasoning, with the entry ID `{end offset}-0`; the
                       end marker is `{length}-1`, `end` = JSON

Entry IDs are the character offsets, so a replay from offset N is one XRANGE from `N-1`
(the end marker of a stream exactly N long, and every entry ending after N) and following
live is XREAD BLOCK after the last ID seen. Every write refreshes both keys' TTL (PEXPIRE).
A new generation per start means a chat's next turn never mixes with a previous one a
reader may still be following.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import orjson
import redis.asyncio as redis

from proxy.errors import StreamLost
from proxy.parts import Part, Reasoning, characters
from proxy.redis_retry import REDIS_ERRORS, reconnecting, redis_call
from proxy.resume.base import (
    StoredItem,
    StoredPart,
    dump_ending,
    load_ending,
    not_found,
    part_from,
    past_the_end,
    too_large,
)
from proxy.values import Ending

logger = logging.getLogger("proxy.resume")

PREFIX = "llm-stream-proxy:resume:"
# How long the end of a stream may wait for the text queued before it to reach Redis.
END_TIMEOUT = 2.0
# Starting a stored stream (before its first byte) and finding one (a resume) wait no longer:
# a Redis that has not answered is down. Above the worst round trip measured on a busy
# 2-core machine (0.78 s, docs/operations.md), as PROXY_REDIS_TIMEOUT's default is; the
# socket's own bound is the follow's.
CALL_TIMEOUT = 2.0
# Deltas are gathered this long into one round trip: a pipeline per 20 ms of text still cost
# the proxy nearly as much CPU as relaying it (README, Performance). Only resumers on other
# replicas wait for it; the client that started the stream reads it in-process
# (proxy/resumable.py), and the end of a stream is written at once.
BATCH_WINDOW = 0.1


Entry = tuple[bytes, dict[bytes, bytes]]


def _entries(answer: Any) -> list[Entry]:
    """XRANGE's entries, or XREAD's for its one key, whichever RESP version answered."""
    if isinstance(answer, dict):  # RESP3 XREAD: {key: [entries]}
        answer = next(iter(answer.values()), [])
    elif answer and isinstance(answer[0][1], list):  # RESP2 XREAD: [[key, [entries]]]
        answer = answer[0][1]
    return cast(list[Entry], answer or [])


def _offset(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


def _item(entry_id: bytes, fields: Mapping[bytes, bytes], offset: int) -> StoredItem:
    text = fields.get(b"t")
    if text is not None:
        return part_from(StoredPart(text.decode(), _offset(entry_id)), offset)
    reasoning = fields.get(b"r")
    if reasoning is not None:
        return part_from(StoredPart(Reasoning(reasoning.decode()), _offset(entry_id)), offset)
    return load_ending(fields[b"end"])


def _batches(pending: list[tuple[int, Part]]) -> list[tuple[int, dict[str, str]]]:
    """Queued parts as entries: one per run of one kind, by the offset of its end."""
    entries: list[tuple[int, dict[str, str]]] = []
    for end, part in pending:
        field, text = ("t", part) if isinstance(part, str) else ("r", characters(part))
        if entries and field in entries[-1][1]:
            entries[-1] = (end, {field: entries[-1][1][field] + text})
        else:
            entries.append((end, {field: text}))
    return entries


class RedisStreamWriter:
    __slots__ = (
        "_bytes",
        "_due_refresh",
        "_end_queued",
        "_final",
        "_flushing",
        "_hurry",
        "_key",
        "_meta",
        "_pending",
        "_redis",
        "_request_id",
        "_store",
        "length",
    )

    def __init__(self, store: RedisResumeStore, meta: str, key: str, request_id: str) -> None:
        self._store = store
        self._redis = store.redis
        self._meta = meta
        self._key = key
        self._request_id = request_id
        self._pending: list[tuple[int, Part]] = []
        self._final: Ending | None = None  # once set, nothing more is stored
        self._end_queued = False
        self._flushing: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # the end has come: no more gathering
        self._due_refresh = 0.0  # when the keys' TTL is next refreshed (loop time)
        self._bytes = 0
        self.length = 0

    def append(self, part: Part) -> None:
        if self._final is not None:
            return
        text = characters(part)
        self._bytes += len(text.encode())
        if self._bytes > self._store.max_bytes:
            self._final = too_large(self._request_id, self._store.max_bytes)
            self._hurry.set()
        else:
            self.length += len(text)
            self._pending.append((self.length, part))
        self._kick()

    async def end(self, ending: Ending) -> None:
        if self._final is None:
            self._final = ending
        self._hurry.set()
        self._kick()
        flushing = self._flushing
        if flushing is not None:
            # Not awaited directly: a cancelled caller must not cut the end marker off.
            await asyncio.wait([flushing], timeout=END_TIMEOUT)

    def _kick(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        ttl = self._store.ttl
        try:
            while self._pending or (self._final is not None and not self._end_queued):
                if self._final is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), BATCH_WINDOW)
                batch, self._pending = self._pending, []
                pipe = self._redis.pipeline(transaction=False)
                # An entry per run of one kind: a replay cuts entries at any offset.
                for end, fields in _batches(batch):
                    pipe.xadd(self._key, fields, id=f"{end}-0")  # type: ignore[arg-type]
                refresh = loop.time() >= self._due_refresh
                if self._final is not None and not self._end_queued:
                    self._end_queued = True
                    end_marker = {"end": dump_ending(self._final)}
                    pipe.xadd(self._key, end_marker, id=f"{self.length}-1")  # type: ignore[arg-type]
                    refresh = True  # the TTL runs from the end
                if refresh:
                    # Every quarter of the TTL while text comes: two commands less per delta,
                    # and the keys still outlive the last write by at least 3/4 of the TTL.
                    self._due_refresh = loop.time() + ttl / 4
                    pipe.pexpire(self._key, int(ttl * 1000))
                    pipe.pexpire(self._meta, int(ttl * 1000))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            # The live stream goes on; only its resume is lost (a reader times out).
            self._pending.clear()
            self._end_queued = True
            if self._final is None:
                self._final = too_large(self._request_id, 0)  # a placeholder: stops appends
            logger.warning(
                "resume store unavailable: a stream is not stored",
                extra={"fields": {"request_id": self._request_id, "error": type(exc).__name__}},
            )


class RedisStoredStream:
    __slots__ = ("_key", "_redis", "_store", "active", "attributes", "length")

    def __init__(
        self,
        store: RedisResumeStore,
        key: str,
        attributes: dict[str, str],
        last: list[Entry],
    ) -> None:
        self._store = store
        self._redis = store.redis
        self._key = key
        self.attributes = attributes
        self.active = not last or b"end" not in last[0][1]
        self.length = _offset(last[0][0]) if last else 0

    async def follow(self, offset: int) -> AsyncGenerator[StoredItem, None]:
        # Redis failing under a reader is an error ending, never a bare cut (issue 25).
        with redis_call("following a stored stream"):
            async with contextlib.aclosing(self._follow(offset)) as items:
                async for item in items:
                    yield item

    async def _follow(self, offset: int) -> AsyncGenerator[StoredItem, None]:
        last = _entries(await self._redis.xrevrange(self._key, count=1))
        if last and b"end" in last[0][1] and _offset(last[0][0]) < offset:
            raise past_the_end(offset, _offset(last[0][0]))
        last_id = f"{offset}-0".encode()
        for entry_id, fields in _entries(await self._redis.xrange(self._key, min=f"{offset}-1")):
            last_id = entry_id
            item = _item(entry_id, fields, offset)
            yield item
            if not isinstance(item, StoredPart):
                return
        block = int(self._store.follow_timeout * 1000)
        while True:
            answer = _entries(await self._redis.xread({self._key: last_id}, block=block))
            if not answer:
                raise StreamLost("the stream being resumed stopped without its end")
            for entry_id, fields in answer:
                last_id = entry_id
                item = _item(entry_id, fields, offset)
                yield item
                if not isinstance(item, StoredPart):
                    return


class RedisResumeStore:
    def __init__(
        self, client: redis.Redis, ttl: float, max_bytes: int, follow_timeout: float
    ) -> None:
        self.redis = client
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.follow_timeout = follow_timeout

    @classmethod
    def from_url(
        cls, url: str, ttl: float, max_bytes: int, follow_timeout: float
    ) -> RedisResumeStore:
        # Reads block for up to the follow timeout: the socket must wait longer than that.
        client = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=follow_timeout + 5.0, **reconnecting()
        )
        return cls(client, ttl, max_bytes, follow_timeout)

    async def start(
        self, stream_id: str, owner: str, attributes: Mapping[str, str]
    ) -> RedisStreamWriter:
        generation = os.urandom(8).hex()
        meta = PREFIX + stream_id
        fields: list[str | bytes] = ["owner", owner, "generation", generation]
        fields += ["attributes", orjson.dumps(dict(attributes))]
        request_id = attributes.get("request_id", stream_id)
        with redis_call("starting a stored stream", request_id):
            async with asyncio.timeout(CALL_TIMEOUT):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(meta, items=fields)
                    pipe.pexpire(meta, int(self.ttl * 1000))
                    await pipe.execute()
        return RedisStreamWriter(self, meta, f"{meta}:{generation}", request_id)

    async def find(self, stream_id: str, owner: str) -> RedisStoredStream:
        with redis_call("finding a stored stream"):
            async with asyncio.timeout(CALL_TIMEOUT):
                meta = cast(dict[bytes, bytes], await self.redis.hgetall(PREFIX + stream_id))
                if not meta or meta.get(b"owner", b"").decode() != owner:
                    raise not_found(stream_id)
                key = f"{PREFIX}{stream_id}:{meta[b'generation'].decode()}"
                last = _entries(await self.redis.xrevrange(key, count=1))
        attributes: dict[str, str] = orjson.loads(meta[b"attributes"])
        return RedisStoredStream(self, key, attributes, last)

    async def aclose(self) -> None:
        await self.redis.aclose()
