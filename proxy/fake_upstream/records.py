"""A fake that keeps every request it receives, for tests to inspect and wait on.

The embedded demo and the benchmark's fake keep nothing; a test that asks what reached the
upstream, or waits for a client to leave, starts this one instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.fake_upstream.request import FakeRequest
from proxy.fake_upstream.server import FakeUpstream


class RecordingFakeUpstream(FakeUpstream):
    """`FakeUpstream` plus `records`: every request in arrival order, and what became of it."""

    def __init__(
        self,
        *,
        tokens: int | None = None,
        token_delay: float = 0.0,
        slow_start: float = 0.0,
        slow_every: int = 1,
    ) -> None:
        super().__init__(
            tokens=tokens, token_delay=token_delay, slow_start=slow_start, slow_every=slow_every
        )
        self.records: list[FakeRequest] = []
        self._changed = asyncio.Event()

    def find(self, marker: str) -> list[FakeRequest]:
        return [record for record in list(self.records) if marker in record.prompt]

    async def wait_received(self, marker: str, timeout: float) -> FakeRequest:
        """The first request whose prompt contains marker, once it has arrived."""
        return await self._wait_for(marker, timeout, lambda record: True)

    async def wait_disconnected(self, marker: str, timeout: float) -> FakeRequest:
        """A request whose prompt contains marker, once its client has left it unfinished."""
        return await self._wait_for(marker, timeout, lambda r: r.disconnected_at is not None)

    def received(self, record: FakeRequest) -> None:
        self.records.append(record)
        self._wake_waiters()

    def clients_left(self, records: list[FakeRequest]) -> None:
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wakes every waiter; each then waits on a fresh event."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for(
        self, marker: str, timeout: float, done: Callable[[FakeRequest], bool]
    ) -> FakeRequest:
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                for record in self.find(marker):
                    if done(record):
                        return record
                await changed.wait()
