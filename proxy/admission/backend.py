"""What admission's Redis pieces share: the connection, the errors a store can fail with,
the bound on every call, the undos run after a call timed out, and the throttled warning.

The rate limits (rate_limits.py), the per-client stream slots (counters.py) and the budgets
(budgets/) each keep their own keys and scripts in the one Redis the proxy is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis

from proxy.redis_retry import REDIS_ERRORS, reconnecting
from proxy.settings import AdmissionPolicy

T = TypeVar("T")

# What a store call can fail with: redis-py's errors, the socket's, and the bound's timeout.
STORE_ERRORS = REDIS_ERRORS
# How long undoing an admission that timed out may take: it runs in the background, after
# the stream was let through, and must reach a Redis that was slow, so far longer than
# PROXY_REDIS_TIMEOUT (PROXY_REDIS_TIMEOUT bounds what a stream waits for).
UNDO_TIMEOUT = 10.0
# A backend that stays down is told of at most this often, not once per request.
WARNING_INTERVAL = 10.0


def connect(policy: AdmissionPolicy) -> redis.Redis | None:
    """The Redis client of PROXY_REDIS_URL (None without one), closed by Admission."""
    if policy.redis_url is None:
        return None
    return redis.Redis.from_url(
        policy.redis_url,
        # Each call is bounded by PROXY_REDIS_TIMEOUT itself; the socket's own bound is the
        # undo's, which must outwait a slow Redis.
        socket_timeout=UNDO_TIMEOUT,
        socket_connect_timeout=policy.redis_timeout,
        **reconnecting(),
    )


async def bounded(timeout: float, step: Awaitable[T]) -> T:
    """`step`, or TimeoutError past PROXY_REDIS_TIMEOUT: a store slower than that is down."""
    async with asyncio.timeout(timeout):
        return await step


class Undos:
    """Undos of calls the proxy stopped waiting for (sent, so they may still run, late): each
    runs in the background, bounded by UNDO_TIMEOUT; `aclose` waits for those still running."""

    def __init__(self, failed: Callable[[BaseException], None]) -> None:
        self._running: set[asyncio.Task[None]] = set()
        self._failed = failed  # what to say when an undo fails

    def later(self, undo: Callable[[], Awaitable[object]]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(undo))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, undo: Callable[[], Awaitable[object]]) -> None:
        try:
            async with asyncio.timeout(UNDO_TIMEOUT):
                await undo()
        except STORE_ERRORS as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        await asyncio.gather(*self._running, return_exceptions=True)


class ThrottledWarning:
    """One warning line at most every WARNING_INTERVAL seconds, naming the error's type."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last = -WARNING_INTERVAL

    def __call__(self, exc: BaseException, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= WARNING_INTERVAL:
            self._last = now
            self._logger.warning(message, *args, extra={"fields": {"error": type(exc).__name__}})
