"""What every request shares, built once by the app's lifespan (app.py) and passed down."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.balancer import Balancer
from proxy.dialects import Dialect, get_dialect
from proxy.guards import Guards
from proxy.metrics import Metrics
from proxy.settings import ModelSpec, Settings
from proxy.upstream import UpstreamHTTP

if TYPE_CHECKING:
    from proxy.resumable import ResumableStreams


@dataclass(slots=True, frozen=True)
class Upstream:
    """A model ready to serve: its spec, its adapter and the base URLs to reach it."""

    spec: ModelSpec
    dialect: Dialect
    balancer: Balancer


@dataclass(slots=True, frozen=True)
class Services:
    settings: Settings
    # Configured models by name, the default first.
    upstreams: Mapping[str, Upstream]
    http: UpstreamHTTP
    guards: Guards
    metrics: Metrics = field(default_factory=Metrics)  # none unless the app has them
    # PROXY_RESUME (issue 13); None when off.
    resumable: ResumableStreams | None = None

    @property
    def default_upstream(self) -> Upstream:
        return next(iter(self.upstreams.values()))


def build_upstreams(
    settings: Settings, fallback_url: str = "", metrics: Metrics | None = None
) -> dict[str, Upstream]:
    """Every configured model, ready to serve; one without URLs is served at fallback_url
    (the built-in fake upstream). Its replicas' health goes to the metrics from the start."""
    metrics = metrics or Metrics()
    upstreams = {}
    for spec in settings.models():
        urls = spec.urls or (fallback_url,)
        for url in urls:
            metrics.replica_up(spec.name, url, True)
        balancer = Balancer(urls, settings.replica_cooldown, _reporter(metrics, spec.name))
        upstreams[spec.name] = Upstream(spec, get_dialect(spec.dialect), balancer)
    return upstreams


def _reporter(metrics: Metrics, model: str) -> Callable[[str, bool], None]:
    def replica_health(url: str, up: bool) -> None:
        metrics.replica_up(model, url, up)

    return replica_health
