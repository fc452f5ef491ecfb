"""Where the windows' counts live: the shape both stores have, and the one in memory.

A window's count is what was settled in it plus the holds (reservations) still open in it.
A hold is named by its reservation and lapses at its deadline, so a replica that dies
holding reservations frees them in time; a settlement drops its hold (if it is still there:
a store that lost it, a Redis restarted, say, gives nothing back for it) and adds the
stream's real cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from proxy.admission.budgets.ledger import Grant, Refusal, Window, grant


@dataclass(slots=True, frozen=True)
class Claim:
    """One reservation as a store is asked for it, and later settles it."""

    keys: tuple[str, ...]  # where each window's count is kept
    windows: tuple[Window, ...]
    hold: str  # the reservation's name
    prompt_tokens: int  # the estimate
    requested: int  # output tokens asked for
    deadline: float  # when an unsettled hold lapses (epoch seconds)


class BudgetStore(Protocol):
    async def reserve(self, claim: Claim, now: float) -> tuple[Grant | Refusal, tuple[int, ...]]:
        """Atomically: the grant (or refusal) and, granted, each window's count after it."""
        ...

    async def settle(self, claim: Claim, charges: tuple[int, ...], now: float) -> None:
        """Drop the claim's hold and add what the stream really cost to each window."""
        ...

    async def undo(self, claim: Claim, now: float) -> None:
        """The claim's reservation counts for nothing, whether it was made already or is
        made after this (a reserve the proxy stopped waiting for may run late)."""
        ...

    async def counts(self, keys: tuple[str, ...], now: float) -> tuple[int, ...]: ...


@dataclass(slots=True)
class _Count:
    expires: float
    settled: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # hold: (units, deadline)

    def total(self, now: float) -> int:
        for hold in [hold for hold, (_, deadline) in self.holds.items() if deadline < now]:
            del self.holds[hold]
        return self.settled + sum(units for units, _ in self.holds.values())


# Counts outlive their window by this much, so a late settlement still finds its hold.
GRACE = 60.0


class MemoryBudgetStore:
    """One process's counts (no PROXY_REDIS_URL): exact, since one event loop runs it."""

    def __init__(self) -> None:
        self._counts: dict[str, _Count] = {}

    def _count(self, key: str, window: Window, now: float) -> _Count:
        for stale in [key for key, count in self._counts.items() if count.expires < now]:
            del self._counts[stale]
        return self._counts.setdefault(key, _Count(window.resets_at + GRACE))

    def _counts_of(self, claim: Claim, now: float) -> list[_Count]:
        pairs = zip(claim.keys, claim.windows, strict=True)
        return [self._count(key, window, now) for key, window in pairs]

    async def reserve(self, claim: Claim, now: float) -> tuple[Grant | Refusal, tuple[int, ...]]:
        counts = self._counts_of(claim, now)
        used = tuple(count.total(now) for count in counts)
        decision = grant(claim.windows, used, claim.prompt_tokens, claim.requested)
        if isinstance(decision, Refusal):
            return decision, ()
        for count, charge in zip(counts, decision.charges, strict=True):
            count.holds[claim.hold] = (charge, claim.deadline)
        return decision, tuple(
            spent + charge for spent, charge in zip(used, decision.charges, strict=True)
        )

    async def settle(self, claim: Claim, charges: tuple[int, ...], now: float) -> None:
        for count, charge in zip(self._counts_of(claim, now), charges, strict=True):
            count.holds.pop(claim.hold, None)
            count.settled += charge

    async def undo(self, claim: Claim, now: float) -> None:
        for count in self._counts_of(claim, now):  # never late here: one event loop
            count.holds.pop(claim.hold, None)

    async def counts(self, keys: tuple[str, ...], now: float) -> tuple[int, ...]:
        return tuple(count.total(now) if (count := self._counts.get(key)) else 0 for key in keys)
