"""The race for a stream's first part (issue 30, SPEC §5j): one attempt, and when it has
produced no part by `hedge_after`, at most one hedge on another replica; the first to produce a
part wins and the other is closed at once (its upstream sees the disconnect).

A racer that fails while the other runs is not the request's failure. When every racer failed,
the request's error is the most useful of theirs: an upstream's own answer (a status, with its
message) before a broken stream, before a connection that failed or timed out; the first
attempt's on a tie. The relay then retries under its policy, as for one failed attempt.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from proxy.attempt import UpstreamAttempt
from proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from proxy.parts import Part
from proxy.record import AttemptResult


class Racers(Protocol):
    """What the race asks of the relay: its attempts, and what to do with each at its end."""

    def start(self) -> UpstreamAttempt: ...

    def hedge(self, first: UpstreamAttempt) -> UpstreamAttempt | None:
        """Another attempt on another healthy replica, when the hedge budget allows one."""
        ...

    async def first_part(self, attempt: UpstreamAttempt) -> Part | None: ...

    async def failed(self, attempt: UpstreamAttempt, error: UpstreamError) -> None: ...

    async def dropped(self, attempt: UpstreamAttempt, result: AttemptResult) -> None: ...


async def race(racers: Racers, hedge_after: float | None) -> tuple[UpstreamAttempt, Part | None]:
    """The attempt whose first part came first, and that part (None: its body ended whole
    before any); raises the most useful error when every racer failed."""
    first = racers.start()
    running: dict[asyncio.Future[Part | None], UpstreamAttempt] = {
        asyncio.ensure_future(racers.first_part(first)): first
    }
    errors: list[UpstreamError] = []
    winner: UpstreamAttempt | None = None
    try:
        while running:
            done, _ = await asyncio.wait(
                running, timeout=hedge_after, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # slow to its first part: one hedge, at most
                hedge_after, hedge = None, racers.hedge(first)
                if hedge is not None:
                    running[asyncio.ensure_future(racers.first_part(hedge))] = hedge
                continue
            for task in sorted(done, key=lambda task: task.exception() is not None):
                attempt = running.pop(task)
                error = task.exception()
                if error is None and winner is None:
                    winner, part = attempt, task.result()
                elif isinstance(error, UpstreamError):
                    errors.append(error)
                    await racers.failed(attempt, error)
                elif error is not None:  # not the upstream's failure: a bug, let it through
                    await racers.dropped(attempt, "cancelled")
                    raise error
                else:
                    await racers.dropped(attempt, "hedge_lost")
            if winner is not None:
                return winner, part
        raise most_useful(errors)
    finally:
        await _close(racers, running, "hedge_lost" if winner is not None else None)


async def _close(
    racers: Racers,
    running: dict[asyncio.Future[Part | None], UpstreamAttempt],
    result: AttemptResult | None,
) -> None:
    """Stop the racers still running: the loser of a won race, or every racer when the race
    itself was cancelled (the deadline, or the client leaving)."""
    for task in running:
        task.cancel()
    for task, attempt in running.items():
        await asyncio.wait([task])
        await racers.dropped(attempt, result or "cancelled")


def most_useful(errors: list[UpstreamError]) -> UpstreamError:
    def rank(error: UpstreamError) -> int:
        if isinstance(error, UpstreamStatusError):
            return 3
        if isinstance(error, UpstreamProtocolError):
            return 2
        return 1 if isinstance(error, UpstreamUnavailable) else 0

    return max(errors, key=rank)  # max keeps the first of equals: the first attempt's
