"""What every request shares, built once by the app's lifespan (app.py) and passed down."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from proxy.balancer import Balancer
from proxy.dialects import Dialect, get_dialect
from proxy.guards import Guards
from proxy.hedging import FirstPartTimes, HedgeBudget
from proxy.observers import Observers, StreamObserver
from proxy.resumable import ResumableStreams
from proxy.settings import ModelSpec, Settings
from proxy.upstream import UpstreamHTTP
from proxy.urls import PublicURL

# What a model's balancer tells when one of its replicas goes down or comes back.
HealthReporter = Callable[[PublicURL, bool], None]


@dataclass(slots=True, frozen=True)
class Upstream:
    """A model ready to serve: its spec, its adapter and the base URLs to reach it."""

    spec: ModelSpec
    dialect: Dialect
    balancer: Balancer
    # Its recent times to a first part: what `hedge_after: auto` follows (issue 30).
    first_parts: FirstPartTimes = field(default_factory=FirstPartTimes)

    async def reachable(self, http: UpstreamHTTP, timeout: float) -> bool:
        """Whether a healthy replica answers HTTP at all (any status will do)."""
        for url in self.balancer.healthy_urls():
            try:
                response = await http.send("GET", url + "/", timeout=timeout)
            except httpx.HTTPError:
                continue
            await response.aclose()
            return True
        return False


@dataclass(slots=True, frozen=True)
class Services:
    settings: Settings
    # Configured models by name, the default first.
    upstreams: Mapping[str, Upstream]
    http: UpstreamHTTP
    guards: Guards
    # Who hears of every stream's start and end and every attempt's end.
    observers: StreamObserver = field(default_factory=Observers)
    # PROXY_RESUME (issue 13); None when off.
    resumable: ResumableStreams | None = None
    # PROXY_HEDGE_BUDGET: the share of requests that may be hedged (issue 30).
    hedges: HedgeBudget = field(default_factory=lambda: HedgeBudget(0.1, time.monotonic))

    @property
    def default_upstream(self) -> Upstream:
        return next(iter(self.upstreams.values()))


def build_upstreams(
    settings: Settings,
    fallback_url: str = "",
    health: Callable[[str], HealthReporter] | None = None,
) -> dict[str, Upstream]:
    """Every configured model, ready to serve; one without URLs is served at fallback_url
    (the built-in fake upstream). `health(model)` hears of its replicas from the start."""
    upstreams = {}
    for spec in settings.models:
        reporter = health(spec.name) if health is not None else None
        balancer = Balancer(spec.urls or (fallback_url,), settings.replica_cooldown, reporter)
        if reporter is not None:
            for replica in balancer.replicas:
                reporter(replica.public, True)
        upstreams[spec.name] = Upstream(spec, get_dialect(spec.dialect), balancer)
    return upstreams
