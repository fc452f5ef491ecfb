"""Spreading a model's streams over its replicas, and resting the ones that fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.urls import PublicURL


@dataclass(slots=True, eq=False)
class Replica:
    url: str
    public: PublicURL = field(init=False)  # what logs and metrics may show of the URL
    in_flight: int = 0
    cooling_until: float = 0.0
    recovery: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.public = PublicURL.of(self.url)

    def healthy(self, now: float) -> bool:
        return self.cooling_until <= now


class Balancer:
    """Least in-flight streams first (ties in turn); a failed replica cools down.

    A replica that fails to connect, answers 5xx or drops before any text is skipped for
    `cooldown` seconds and then tried again (a circuit breaker, half-open after the cool-down).
    When every replica is cooling down, the one whose cool-down ends first is tried anyway:
    refusing outright would turn one upstream hiccup into seconds of errors. A lone replica
    never cools down: there is nothing to fail over to, and /readyz should not flap.

    `on_health(replica, up)` hears when a replica starts and ends a cool-down (for the metrics);
    the end is a timer, so the news does not wait for the next stream.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        cooldown: float,
        on_health: Callable[[PublicURL, bool], None] | None = None,
    ) -> None:
        self.replicas = [Replica(url) for url in urls]
        self._cooldown = cooldown
        self._turn = 0
        self._on_health = on_health

    def acquire(self, tried: set[str]) -> Replica:
        """A replica for the next attempt, counted in flight until `release`."""
        now = time.monotonic()
        count = len(self.replicas)
        start, self._turn = self._turn, (self._turn + 1) % count
        order = [self.replicas[(start + i) % count] for i in range(count)]
        candidates = [r for r in order if r.healthy(now) and r.url not in tried] or [
            r for r in order if r.healthy(now)
        ]
        if candidates:
            replica = min(candidates, key=lambda r: r.in_flight)
        else:
            replica = min(order, key=lambda r: r.cooling_until)
        replica.in_flight += 1
        return replica

    def has_untried(self, tried: set[str]) -> bool:
        now = time.monotonic()
        return any(r.healthy(now) and r.url not in tried for r in self.replicas)

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1

    def failed(self, replica: Replica) -> None:
        if len(self.replicas) > 1:
            replica.cooling_until = time.monotonic() + self._cooldown
            if self._on_health is not None:
                self._on_health(replica.public, False)
                if replica.recovery is not None:
                    replica.recovery.cancel()
                replica.recovery = asyncio.get_running_loop().call_later(
                    self._cooldown, self._recovered, replica
                )

    def _recovered(self, replica: Replica) -> None:
        replica.recovery = None
        if self._on_health is not None:
            self._on_health(replica.public, True)

    def close(self) -> None:
        """Cancel pending cool-down timers (the app is stopping)."""
        for replica in self.replicas:
            if replica.recovery is not None:
                replica.recovery.cancel()
                replica.recovery = None

    def healthy_urls(self) -> list[str]:
        now = time.monotonic()
        return [r.url for r in self.replicas if r.healthy(now)]
