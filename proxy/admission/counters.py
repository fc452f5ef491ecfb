"""Open streams per client (PROXY_MAX_STREAMS_PER_KEY): in this process, or in Redis for
every replica that shares it."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Protocol

import redis.asyncio as redis

from proxy.admission.backend import Undos

logger = logging.getLogger("proxy.guards")


class StreamCounter(Protocol):
    async def acquire(self, client: str, limit: int) -> bool: ...

    async def release(self, client: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStreamCounter:
    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    async def acquire(self, client: str, limit: int) -> bool:
        count = self._open.get(client, 0)
        if count >= limit:
            return False
        self._open[client] = count + 1
        return True

    async def release(self, client: str) -> None:
        count = self._open.get(client, 0) - 1
        if count > 0:
            self._open[client] = count
        else:
            self._open.pop(client, None)

    async def aclose(self) -> None:
        pass


# A slot is a member of the client's sorted set, scored by when it lapses (Redis's clock).
# A release removes only its own member: a slot taken before a Redis restart gives nothing
# back to the new one (a counter went below zero there and admitted one stream too many),
# and the slots of a replica that died lapse one by one, not kept alive by others' streams.
# KEYS[2] marks a slot undone: an admission the proxy stopped waiting for must not count,
# whether its script runs before the undo or after it (issue 25: a late answer leaked slots).
_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_UNDO = """
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], 1, 'PX', ARGV[1])
return 1
"""


class RedisStreamCounter:
    """Open streams per client, shared by every proxy replica using the same Redis."""

    def __init__(self, client: redis.Redis, expiry: int) -> None:
        self._redis = client
        # A proxy that dies holding slots must not block a client for ever.
        self._expiry_ms = expiry * 1000
        self._acquire = client.register_script(_ACQUIRE)
        self._undo = client.register_script(_UNDO)
        self._held: dict[str, list[str]] = {}  # this process's slots, by client
        self._undos = Undos(self._undo_failed)

    def _key(self, client: str) -> str:
        return f"llm-stream-proxy:stream-slots:{client}"

    def _undone_key(self, slot: str) -> str:
        return f"llm-stream-proxy:stream-slot-undone:{slot}"

    async def acquire(self, client: str, limit: int) -> bool:
        slot = os.urandom(8).hex()
        keys = [self._key(client), self._undone_key(slot)]
        try:
            taken = await self._acquire(keys, [limit, self._expiry_ms, slot])
        except (asyncio.CancelledError, TimeoutError, redis.TimeoutError):
            # Sent, not answered in time: it may still run, late.
            self._undos.later(lambda: self._undo(keys, [self._expiry_ms, slot]))
            raise
        if not taken:
            return False
        self._held.setdefault(client, []).append(slot)
        return True

    def _undo_failed(self, exc: BaseException) -> None:
        logger.warning(  # the slot, if it was taken, lapses with its expiry
            "a timed-out stream slot could not be undone; it lapses in %d s",
            self._expiry_ms // 1000,
            extra={"fields": {"error": type(exc).__name__}},
        )

    async def release(self, client: str) -> None:
        slots = self._held.get(client)
        if not slots:
            return
        slot = slots.pop()
        if not slots:
            del self._held[client]
        await self._redis.zrem(self._key(client), slot)

    async def aclose(self) -> None:
        """Waits for the undos still running (each bounded)."""
        await self._undos.aclose()
