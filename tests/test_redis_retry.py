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
        server.restart()  # every pooled connection is now closed by the server
        assert await retrying.incr("n") == 1  # empty again, and no error
        try:  # without the retry the same first command fails: this is what it fixes
            await plain.incr("n")
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError("redis-py now retries by itself: reconnecting() may go")
    finally:
        await plain.aclose()
        await retrying.aclose()
        server.kill()
