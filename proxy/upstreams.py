"""The configured models, each ready to serve: its spec, its dialect and its balancer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from proxy.balancer import Balancer
from proxy.conversation import Conversation
from proxy.dialects import Dialect, get_dialect
from proxy.errors import UnsupportedParameter
from proxy.hedging import FirstPartTimes
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

    def refuse_beyond(self, conversation: Conversation) -> None:
        """A 400 naming the field the model's dialect cannot carry (SPEC §5h): never dropped."""
        beyond = conversation.beyond(self.dialect.capabilities)
        if beyond is not None:
            param, what = beyond
            dialect, model = self.dialect.name, self.spec.name
            message = (
                f"{param}: model {model!r} speaks the {dialect} dialect, which cannot carry {what}"
            )
            raise UnsupportedParameter(message, param=param)


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
