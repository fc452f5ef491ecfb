"""How every Redis client of the proxy survives a Redis restart (issue 20).

redis-py keeps connections in a pool; after a restart each pooled connection is closed by the
server, and without a retry the first command sent on each one fails. Shared limits would
then let that request through unlimited and a resumable stream would go unstored, though
Redis is back. One retry on a new connection is enough; a Redis that is really down still
fails, after one more connection attempt, within the caller's own timeout.

redis-py 8 reconnects by itself only when the event loop has already seen the server close
the connection; a command sent right after a restart still fails, and its default Retry does
not cover that error (measured: tests/test_redis_retry.py keeps both cases).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def reconnecting() -> dict[str, Any]:
    """redis-py client options: a command whose connection was closed is sent once more."""
    return {"retry": Retry(NoBackoff(), 1), "retry_on_error": [redis.ConnectionError]}
