"""Per-client limits (PROXY_RATE_LIMIT, PROXY_MAX_STREAMS_PER_KEY), in memory or in Redis.

When the backend fails the proxy keeps serving (fail-open, with a warning at most every ten
seconds) unless PROXY_RATE_LIMIT_FAIL_CLOSED, which answers 503 instead.
"""

from __future__ import annotations

import logging
import time

import limits
import redis.asyncio as redis
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from proxy.admission.backend import STORE_ERRORS, ThrottledWarning, bounded
from proxy.admission.budgets.headers import reset_duration
from proxy.admission.counters import MemoryStreamCounter, RedisStreamCounter, StreamCounter
from proxy.errors import Overloaded, RateLimited
from proxy.redis_retry import reconnecting
from proxy.settings import AdmissionPolicy

logger = logging.getLogger("proxy.guards")


class ClientLimits:
    """A client's request rate and its open streams."""

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
        self._warn = ThrottledWarning(logger)

    @property
    def active(self) -> bool:
        return self._rate is not None or self._max_streams is not None

    async def admit(self, client: str) -> bool:
        """Counts one request; True when it holds a stream slot that `release` must free."""
        try:
            return await bounded(self._timeout, self._admit(client))
        except RateLimited:
            raise
        except STORE_ERRORS as exc:
            return self._backend_failed(exc)

    async def _admit(self, client: str) -> bool:
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
                f"at most {self._max_streams} concurrent streams per client", retry_after=1
            )
        return True

    async def release(self, client: str) -> None:
        try:
            await bounded(self._timeout, self._counter.release(client))
        except STORE_ERRORS as exc:
            self._unavailable(exc)

    async def aclose(self) -> None:
        await self._counter.aclose()

    async def request_headers(self, client: str) -> tuple[tuple[str, str], ...]:
        """OpenAI's x-ratelimit-*-requests of PROXY_RATE_LIMIT for this client (none when
        there is no rate limit, or its backend does not answer)."""
        if self._rate is None:
            return ()
        try:
            stats = await bounded(self._timeout, self._limiter.get_window_stats(self._rate, client))
        except STORE_ERRORS:
            return ()
        return (
            ("x-ratelimit-limit-requests", str(self._rate.amount)),
            ("x-ratelimit-remaining-requests", str(stats.remaining)),
            ("x-ratelimit-reset-requests", reset_duration(stats.reset_time - time.time())),
        )

    def _backend_failed(self, exc: BaseException) -> bool:
        self._unavailable(exc)
        if self._fail_closed:
            raise Overloaded("rate limiting is unavailable; retry shortly", retry_after=1)
        return False

    def _unavailable(self, exc: BaseException) -> None:
        doing = "refusing requests" if self._fail_closed else "serving without limits"
        self._warn(exc, "rate-limit backend unavailable, %s", doing)


def client_limits(policy: AdmissionPolicy, client: redis.Redis | None) -> ClientLimits:
    """The policy's limits: in Redis when the proxy has one (`client`), else in this process."""
    rate = limits.parse(policy.rate_limit) if policy.rate_limit else None
    storage: Storage
    counter: StreamCounter
    if client is None or policy.redis_url is None:
        storage, counter = MemoryStorage(), MemoryStreamCounter()
    else:
        timeout = policy.redis_timeout
        storage = RedisStorage(
            "async+" + policy.redis_url,
            implementation="redispy",
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **reconnecting(),  # passed on to redis-py as they are
        )
        counter = RedisStreamCounter(client, expiry=policy.slot_expiry)
    return ClientLimits(
        rate,
        policy.max_streams_per_key,
        storage,
        counter,
        fail_closed=policy.fail_closed,
        timeout=policy.redis_timeout,
    )
