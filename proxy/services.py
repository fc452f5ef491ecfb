"""What every request shares, built once by the app's lifespan (app.py) and passed down."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.requests import Request

from proxy.admission import Admission
from proxy.hedging import HedgeBudget
from proxy.observers import Observers, StreamObserver
from proxy.resumable import ResumableStreams
from proxy.settings import Settings
from proxy.upstream import UpstreamHTTP
from proxy.upstreams import Upstream


@dataclass(slots=True, frozen=True)
class Services:
    settings: Settings
    # Configured models by name, the default first.
    upstreams: Mapping[str, Upstream]
    http: UpstreamHTTP
    admission: Admission
    # Who hears of every stream's start and end and every attempt's end.
    observers: StreamObserver = field(default_factory=Observers)
    # PROXY_RESUME (issue 13); None when off.
    resumable: ResumableStreams | None = None
    # PROXY_HEDGE_BUDGET: the share of requests that may be hedged (issue 30).
    hedges: HedgeBudget = field(default_factory=lambda: HedgeBudget(0.1, time.monotonic))

    @property
    def default_upstream(self) -> Upstream:
        return next(iter(self.upstreams.values()))


def services_of(request: Request) -> Services:
    """The app's services, as its lifespan built them."""
    services: Services = request.app.state.services
    return services
