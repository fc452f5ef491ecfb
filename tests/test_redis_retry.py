"""proxy/redis_retry.py: the proxy's Redis clients carry on across a Redis restart."""

from __future__ import annotations

import redis.asyncio as redis

from proxy.redis_retry import reconnecting
from tests.redis_server import RedisServer


async def test_the_first_command_after_a_redis_restart_succeeds_on_a_new_connection() -> None:
    server = RedisServer()
    plain = redis.Redis.from_url(server.url, socket_timeout=1)
    retrying = redis.Redis.from_url(server.url, socket_timeout=1, **reconnecting())
    try:
        assert await plain.incr("n") == 1
        assert await retrying.incr("n") == 2
        # Each client's first command right after a restart, before the event loop has seen
        # the server close its pooled connection (the case a busy proxy meets).
        server.restart()
        try:  # redis-py's own default (8.x: its Retry does not cover this) fails it
            await plain.incr("n")
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError("redis-py now retries by itself: reconnecting() may go")
        assert await plain.incr("n") == 1  # on a new connection: the failure was the restart
        assert await retrying.incr("n") == 2
        server.restart()
        assert await retrying.incr("n") == 1  # empty again, and no error
    finally:
        await plain.aclose()
        await retrying.aclose()
        server.kill()
