"""How every Redis client of the proxy survives a Redis restart (issue 20).

redis-py keeps connections in a pool; after a restart each pooled connection is closed by the
server, and without a retry the first command sent on each one fails. Shared limits would
then let that request through unlimited and a resumable stream would go unstored, though
Redis is back. One retry on a new connection is enough; a Redis that is really down still
fails, after one more connection attempt, within the caller's own timeout.

redis-py 8 reconnects by itself only when the event loop has already seen the server close
the connection; a command sent right after a restart still fails, and its default Retry does
not cover that error (measured: tests/test_redis_retry.py keeps both cases).

Whatever still fails is the proxy's own error (issue 25): `redis_call` turns every redis-py,
socket and timeout error into RedisUnavailable, logged once, so a caller decides what it
means (a 503 before the commit point, an error ending after it) and no traceback escapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.errors import RedisUnavailable

logger = logging.getLogger("proxy.redis")

# What a Redis command can fail with: redis-py's errors, the socket's, and a caller's timeout.
REDIS_ERRORS = (redis.RedisError, OSError, TimeoutError)


def reconnecting() -> dict[str, Any]:
    """redis-py client options: a command whose connection was closed is sent once more."""
    return {"retry": Retry(NoBackoff(), 1), "retry_on_error": [redis.ConnectionError]}


@contextmanager
def redis_call(doing: str, request_id: str | None = None) -> Iterator[None]:
    """Redis commands whose failure is RedisUnavailable, with one warning line."""
    try:
        yield
    except REDIS_ERRORS as exc:
        logger.warning(
            "redis unavailable while %s",
            doing,
            extra={"fields": {"request_id": request_id, "error": type(exc).__name__}},
        )
        raise RedisUnavailable(
            f"the proxy's Redis did not answer while {doing}; retry shortly", retry_after=1
        ) from None
