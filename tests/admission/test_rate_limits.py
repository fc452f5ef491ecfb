"""A client's request rate and open streams (proxy/admission/rate_limits.py)."""

from __future__ import annotations

import pytest
from limits.aio.storage import MemoryStorage

from proxy.admission.rate_limits import ClientLimits, client_limits
from proxy.errors import Overloaded, RateLimited
from tests.servers import proxy_settings


def limits_of(**overrides: object) -> ClientLimits:
    return client_limits(proxy_settings(None, **overrides).admission, None)


async def test_a_rate_past_its_limit_is_429_with_retry_after() -> None:
    limits = limits_of(rate_limit="2/minute")
    assert limits.active
    assert not await limits.admit("a")  # no stream slot: no per-client stream limit
    await limits.admit("a")
    with pytest.raises(RateLimited) as refused:
        await limits.admit("a")
    assert (refused.value.retry_after or 0) >= 1
    await limits.admit("b")  # another client's rate is its own


async def test_the_requests_headers_say_what_is_left_of_the_rate() -> None:
    limits = limits_of(rate_limit="5/minute")
    await limits.admit("a")
    headers = dict(await limits.request_headers("a"))
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "4"


async def test_streams_past_the_per_client_limit_are_429_until_one_is_released() -> None:
    limits = limits_of(max_streams_per_key=1)
    assert await limits.admit("a")
    with pytest.raises(RateLimited):
        await limits.admit("a")
    await limits.release("a")
    assert await limits.admit("a")


async def test_a_backend_that_fails_is_served_open_or_refused_as_configured() -> None:
    class Broken:
        async def acquire(self, client: str, limit: int) -> bool:
            raise ConnectionError

        async def release(self, client: str) -> None:
            raise ConnectionError

        async def aclose(self) -> None:
            pass

    for fail_closed in (False, True):
        limits = ClientLimits(
            None, 1, MemoryStorage(), Broken(), fail_closed=fail_closed, timeout=0.25
        )
        if fail_closed:
            with pytest.raises(Overloaded):
                await limits.admit("a")
        else:
            assert not await limits.admit("a")  # served, holding no slot
        await limits.release("a")  # a warning, never an error
