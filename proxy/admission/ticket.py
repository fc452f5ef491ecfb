"""Who may stream and how much: client keys, the stream cap, per-client limits.

ticket = await guards.admit(client, peer)   # a cap slot and the client's limits, or 503/429
conversation = await ticket.reserve(model, conversation, record)   # a key's budget, or 429
...
await ticket.release()                      # once, whatever happened; again is a no-op
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from typing import Protocol

import limits
import redis.asyncio as redis
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from proxy.budgets import Budgets, Reservation, budgets_of
from proxy.budgets.headers import reset_duration
from proxy.conversation import Conversation
from proxy.errors import Overloaded, RateLimited, Unauthorized
from proxy.record import StreamRecord
from proxy.redis_retry import REDIS_ERRORS, reconnecting
from proxy.settings import AdmissionPolicy, ClientKeySpec, ModelSpec

logger = logging.getLogger("proxy.guards")

# How long undoing an admission that timed out may take: it runs in the background, after
# the stream was let through, and must reach a Redis that was slow, so far longer than
# PROXY_REDIS_TIMEOUT (PROXY_REDIS_TIMEOUT bounds what a stream waits for).
UNDO_TIMEOUT = 10.0


def client_id(key: str) -> str:
    """A short, non-reversible name for a client key, fit for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ClientKeys:
    """PROXY_API_KEYS and PROXY_KEYS: the SHA-256 of a given key is compared with every
    configured key's in constant time. A named key's client is its name; a plain key's a
    short hash of it."""

    def __init__(self, keys: tuple[str, ...], named: tuple[ClientKeySpec, ...] = ()) -> None:
        self._keys = [(_digest(key), client_id(key)) for key in keys]
        self._keys += [(spec.key_sha256, spec.name) for spec in named]

    @property
    def open(self) -> bool:
        return not self._keys

    def identify(self, authorization: str | None, x_api_key: str | None) -> str | None:
        """The client of a valid key, None when the proxy is open; else Unauthorized."""
        if self.open:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else (x_api_key or "")
        digest, client = _digest(given), None
        for key, name in self._keys:  # no early exit: timing says nothing about which key
            if hmac.compare_digest(key, digest):
                client = name
        if not given or client is None:
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
        return client


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class StreamSlots:
    """PROXY_MAX_CONCURRENT_STREAMS: refuse at once rather than queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def acquire(self) -> None:
        if self.open >= self.limit:
            raise Overloaded("the proxy is at its stream limit; retry shortly", retry_after=1)
        self.open += 1

    def release(self) -> None:
        self.open -= 1


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
        self._undoing: set[asyncio.Task[None]] = set()

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
            self._undo_later(keys, slot)  # sent, not answered in time: it may still run, late
            raise
        if not taken:
            return False
        self._held.setdefault(client, []).append(slot)
        return True

    def _undo_later(self, keys: list[str], slot: str) -> None:
        task = asyncio.get_running_loop().create_task(self._undo_slot(keys, slot))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def _undo_slot(self, keys: list[str], slot: str) -> None:
        try:
            async with asyncio.timeout(UNDO_TIMEOUT):
                await self._undo(keys, [self._expiry_ms, slot])
        except REDIS_ERRORS as exc:  # the slot, if it was taken, lapses with its expiry
            logger.warning(
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
        await asyncio.gather(*self._undoing, return_exceptions=True)


class ClientLimits:
    """PROXY_RATE_LIMIT and PROXY_MAX_STREAMS_PER_KEY, in memory or in Redis.

    When the backend fails the proxy keeps serving (fail-open, with a warning at most every
    ten seconds) unless PROXY_RATE_LIMIT_FAIL_CLOSED, which answers 503 instead.
    """

    def __init__(
        self,
        rate: limits.RateLimitItem | None,
        max_streams: int | None,
        storage: Storage,
        counter: StreamCounter,
        *,
        fail_closed: bool,
        timeout: float,
    ) -> None:
        self._timeout = timeout
        self._rate = rate
        self._max_streams = max_streams
        self._limiter = MovingWindowRateLimiter(storage)
        self._counter = counter
        self._fail_closed = fail_closed
        self._last_warning = 0.0

    @property
    def active(self) -> bool:
        return self._rate is not None or self._max_streams is not None

    async def admit(self, client: str) -> bool:
        """Counts one request; True when it holds a stream slot that `release` must free."""
        try:
            async with asyncio.timeout(self._timeout):
                if self._rate is not None and not await self._limiter.hit(self._rate, client):
                    stats = await self._limiter.get_window_stats(self._rate, client)
                    raise RateLimited(
                        f"rate limit of {self._rate} exceeded for this client",
                        retry_after=max(1.0, stats.reset_time - time.time()),
                    )
                if self._max_streams is None:
                    return False
                if not await self._counter.acquire(client, self._max_streams):
                    raise RateLimited(
                        f"at most {self._max_streams} concurrent streams per client",
                        retry_after=1,
                    )
                return True
        except RateLimited:
            raise
        except REDIS_ERRORS as exc:
            return self._backend_failed(exc)

    async def release(self, client: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._counter.release(client)
        except REDIS_ERRORS as exc:
            self._warn(exc)

    async def aclose(self) -> None:
        await self._counter.aclose()

    async def request_headers(self, client: str) -> tuple[tuple[str, str], ...]:
        """OpenAI's x-ratelimit-*-requests of PROXY_RATE_LIMIT for this client (none when
        there is no rate limit, or its backend does not answer)."""
        if self._rate is None:
            return ()
        try:
            async with asyncio.timeout(self._timeout):
                stats = await self._limiter.get_window_stats(self._rate, client)
        except REDIS_ERRORS:
            return ()
        return (
            ("x-ratelimit-limit-requests", str(self._rate.amount)),
            ("x-ratelimit-remaining-requests", str(stats.remaining)),
            ("x-ratelimit-reset-requests", reset_duration(stats.reset_time - time.time())),
        )

    def _backend_failed(self, exc: BaseException) -> bool:
        self._warn(exc)
        if self._fail_closed:
            raise Overloaded("rate limiting is unavailable; retry shortly", retry_after=1)
        return False

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            logger.warning(
                "rate-limit backend unavailable, %s",
                "refusing requests" if self._fail_closed else "serving without limits",
                extra={"fields": {"error": type(exc).__name__}},
            )


class AdmissionTicket:
    """What one admitted stream holds until it ends: a slot under the proxy's cap, a
    per-client stream slot where that limit is on, and a budgeted key's reservation
    (settled on release). Released once."""

    __slots__ = ("_client_slot", "_guards", "_holds_slot", "_request_headers", "_reservation")

    def __init__(self, guards: Guards) -> None:
        self._guards = guards
        self._holds_slot = False
        self._client_slot: str | None = None  # whose per-client slot, if one is held
        self._reservation: Reservation | None = None
        self._request_headers: tuple[tuple[str, str], ...] = ()

    async def take(self, client: str | None, peer: str) -> None:
        """Called once, by Guards.admit."""
        guards = self._guards
        guards.slots.acquire()
        self._holds_slot = True
        if guards.limited:
            identity = client or f"ip:{peer}"
            if await guards.client_limits.admit(identity):
                self._client_slot = identity
            if guards.budgets.limits(client) is not None:  # told on its response
                self._request_headers = await guards.client_limits.request_headers(identity)

    async def reserve(
        self, model: ModelSpec, conversation: Conversation, record: StreamRecord
    ) -> Conversation:
        """A budgeted key's reservation for this stream (429 when its budget is spent): the
        conversation asks for at most its allowance. Others' conversations pass as they are."""
        budgets = self._guards.budgets
        if record.client is None or budgets.limits(record.client) is None:
            return conversation
        reservation = await budgets.reserve(record.client, model, conversation, record)
        self._reservation = reservation
        reservation.note.headers = self._request_headers + reservation.note.headers
        return reservation.conversation

    def check_output(self, produced_bytes: int, produced_deltas: int) -> None:
        """OutputLimitReached once a budgeted stream's output has passed its allowance."""
        if self._reservation is not None:
            self._reservation.check_output(produced_bytes, produced_deltas)

    async def release(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self._guards.slots.release()
        reservation, self._reservation = self._reservation, None
        identity, self._client_slot = self._client_slot, None
        try:
            if reservation is not None:
                await reservation.settle()
        finally:
            if identity is not None:
                await self._guards.client_limits.release(identity)


class Guards:
    """Everything that decides whether a stream may start, built once per app."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.keys = ClientKeys(policy.client_keys, policy.named_keys)
        self.slots = StreamSlots(policy.max_concurrent_streams)
        self.client_limits, self.redis = client_limits(policy)
        self.limited = self.client_limits.active
        self.budgets: Budgets = budgets_of(policy, self.redis)

    async def admit(self, client: str | None, peer: str) -> AdmissionTicket:
        """A ticket holding this stream's slots; Overloaded or RateLimited when refused
        (then nothing is held)."""
        ticket = AdmissionTicket(self)
        try:
            await ticket.take(client, peer)
        except BaseException:
            await ticket.release()
            raise
        return ticket

    async def aclose(self) -> None:
        await self.client_limits.aclose()
        await self.budgets.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def client_limits(policy: AdmissionPolicy) -> tuple[ClientLimits, redis.Redis | None]:
    """The limits of the policy, and the Redis client to close at shutdown (if any)."""
    rate = limits.parse(policy.rate_limit) if policy.rate_limit else None
    if policy.redis_url is None:
        memory = ClientLimits(
            rate,
            policy.max_streams_per_key,
            MemoryStorage(),
            MemoryStreamCounter(),
            fail_closed=policy.fail_closed,
            timeout=policy.redis_timeout,
        )
        return memory, None
    timeout = policy.redis_timeout
    client = redis.Redis.from_url(
        policy.redis_url,
        # Each call is bounded by PROXY_REDIS_TIMEOUT itself; the socket's own bound is the
        # undo's, which must outwait a slow Redis.
        socket_timeout=UNDO_TIMEOUT,
        socket_connect_timeout=timeout,
        **reconnecting(),
    )
    storage = RedisStorage(
        "async+" + policy.redis_url,
        implementation="redispy",
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **reconnecting(),  # passed on to redis-py as they are
    )
    counter = RedisStreamCounter(client, expiry=policy.slot_expiry)
    shared = ClientLimits(
        rate,
        policy.max_streams_per_key,
        storage,
        counter,
        fail_closed=policy.fail_closed,
        timeout=timeout,
    )
    return shared, client
