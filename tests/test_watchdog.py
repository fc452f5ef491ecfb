"""The watchdog alone: what interrupts a stream, where, and as which failure.

Its clock is the event loop's, so the idle and total timeouts are shown with real (short)
waits and generous margins; the client leaving is an ASGI `receive` the test controls.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from proxy.errors import ClientDisconnected, ProxyError, UpstreamTimeout
from proxy.watchdog import Watchdog


class Client:
    """An ASGI `receive` that reports a disconnect once the test says the client left."""

    def __init__(self) -> None:
        self._gone = asyncio.Event()

    def leave(self) -> None:
        self._gone.set()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}


@pytest.fixture
def client() -> Client:
    return Client()


@contextmanager
def watching(client: Client) -> Iterator[Watchdog]:
    """A watchdog over the current task (the test's: a fixture would run in another)."""
    watchdog = Watchdog(client.receive)
    try:
        yield watchdog
    finally:
        watchdog.close()


async def read_upstream(watchdog: Watchdog, seconds: float) -> None:
    """An upstream read that takes this long, bracketed as the session brackets its reads."""
    watchdog.waiting_for_upstream()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError as cancelled:
        raise watchdog.explain(cancelled) from None
    finally:
        watchdog.got_upstream()


async def test_client_leaving_interrupts_a_guarded_region(client: Client) -> None:
    with watching(client) as watchdog:
        asyncio.get_running_loop().call_later(0.05, client.leave)
        with pytest.raises(ClientDisconnected), watchdog.guarding():
            await asyncio.sleep(30)


async def test_client_leaving_outside_a_guarded_region_is_raised_on_entering_the_next(
    client: Client,
) -> None:
    with watching(client) as watchdog:
        client.leave()
        await asyncio.sleep(0.1)  # unguarded work goes on uninterrupted
        assert isinstance(watchdog.fired, ClientDisconnected)
        with pytest.raises(ClientDisconnected), watchdog.guarding():
            pytest.fail("the region was entered")


async def test_upstream_silence_longer_than_the_idle_timeout_is_a_timeout(
    client: Client,
) -> None:
    with watching(client) as watchdog:
        watchdog.limit_upstream(0.1, math.inf)
        with pytest.raises(UpstreamTimeout, match=r"no text from upstream for 0\.1 s"):
            await read_upstream(watchdog, 30)


async def test_time_between_upstream_reads_is_not_idle(client: Client) -> None:
    with watching(client) as watchdog:
        # Writing to a slow client between reads takes as long as it takes.
        watchdog.limit_upstream(0.5, math.inf)
        for _ in range(3):
            await read_upstream(watchdog, 0.01)
            await asyncio.sleep(0.6)
        assert watchdog.fired is None


async def test_total_timeout_ends_a_stream_that_is_never_idle(client: Client) -> None:
    with watching(client) as watchdog:
        loop = asyncio.get_running_loop()
        watchdog.limit_upstream(10, loop.time() + 0.3)

        async def read_forever() -> None:
            while True:
                await read_upstream(watchdog, 0.05)

        with pytest.raises(UpstreamTimeout, match="total timeout"):
            await read_forever()


async def test_a_cancellation_it_did_not_cause_is_left_alone(client: Client) -> None:
    with watching(client) as watchdog:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.05, task.cancel)
        with pytest.raises(asyncio.CancelledError), watchdog.guarding():
            await asyncio.sleep(30)
        assert watchdog.fired is None
        task.uncancel()


async def test_a_closed_watchdog_no_longer_watches(client: Client) -> None:
    watchdog = Watchdog(client.receive)
    watchdog.limit_upstream(0.05, math.inf)
    watchdog.close()
    client.leave()
    with watchdog.guarding():
        await asyncio.sleep(0.2)
    assert watchdog.fired is None


async def test_only_the_first_failure_counts(client: Client) -> None:
    with watching(client) as watchdog:
        watchdog.limit_upstream(0.05, math.inf)
        failure: ProxyError | None = None
        try:
            await read_upstream(watchdog, 30)
        except UpstreamTimeout as exc:
            failure = exc
        client.leave()
        await asyncio.sleep(0.05)
        assert watchdog.fired is failure
