"""What every request shares, built once by the app's lifespan (app.py) and passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.balancer import Balancer
from proxy.dialects import Dialect, get_dialect
from proxy.guards import Guards
from proxy.settings import ModelSpec, Settings
from proxy.upstream_http import UpstreamHTTP

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
    # PROXY_RESUME (issue 13); None when off.
    resumable: ResumableStreams | None = None

    @property
    def default_upstream(self) -> Upstream:
        return next(iter(self.upstreams.values()))


def build_upstreams(settings: Settings, fallback_url: str = "") -> dict[str, Upstream]:
    """Every configured model, ready to serve; one without URLs is served at fallback_url
    (the built-in fake upstream)."""
    return {
        spec.name: Upstream(
            spec,
            get_dialect(spec.dialect),
            Balancer(spec.urls or (fallback_url,), settings.replica_cooldown),
        )
        for spec in settings.models()
    }
