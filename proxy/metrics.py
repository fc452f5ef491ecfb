"""Prometheus metrics: what an operator watches, recorded once per stream and per attempt.

Names carry one prefix, `llm_proxy_`. Labels stay bounded: configured model names (any other
name a client sends becomes "-"), the log line's outcomes, our own statuses and error types,
attempt results from a fixed set, and replicas as host:port. Never a request id, a key, a
client id, or a URL's user info or path.

    llm_proxy_streams_total{model,outcome}              every stream log line
    llm_proxy_rejections_total{status,type}             every error answered before the commit
    llm_proxy_streams_in_flight{model}                  streams gone upstream, not yet ended
    llm_proxy_time_to_first_byte_seconds{model}         histogram, streams past the commit point
    llm_proxy_stream_duration_seconds{model}            histogram, the same streams
    llm_proxy_stream_bytes_total{model}                 text bytes sent to clients
    llm_proxy_tokens_total{model,kind}                  usage the upstream reported
    llm_proxy_upstream_attempts_total{model,replica,result}
    llm_proxy_replica_up{model,replica}                 1 unless the replica is cooling down

With several workers (PROXY_WORKERS > 1) prometheus-client's multiprocess mode is on (see
`proxy.multiprocess`): each worker writes its values to files in one directory and a scrape
of any worker merges every worker's files.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy.errors import (
    ClientDisconnected,
    ProxyError,
    UpstreamClosedEarly,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.multiprocess import multiprocess_metrics
from proxy.settings import ConfigError, Settings

if TYPE_CHECKING:
    from proxy.record import StreamRecord

PREFIX = "llm_proxy_"

# LLM latencies: a cached prompt's first token comes in tens of milliseconds, a busy large
# model's after tens of seconds (the first-token timeout defaults to 60 s).
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Whole streams: a one-word answer to a ten-minute generation (the total timeout's default).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

AttemptResult = Literal[
    "ok",
    "connect_error",
    "timeout",
    "status_1xx",
    "status_2xx",  # anything but 200 is a failed attempt
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "dropped",
    "protocol_error",
    "cancelled",
]
_STATUS_CLASSES: dict[int, AttemptResult] = {
    1: "status_1xx",
    2: "status_2xx",
    3: "status_3xx",
    4: "status_4xx",
    5: "status_5xx",
}
UNKNOWN_MODEL = "-"

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


def attempt_result(error: UpstreamError) -> AttemptResult:
    """How an upstream attempt failed, as a label value (`ok` and `cancelled` need no error:
    the caller knows them)."""
    if isinstance(error, UpstreamStatusError):
        return _STATUS_CLASSES[min(max(error.upstream_status // 100, 1), 5)]
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamUnavailable):
        return "connect_error"
    if isinstance(error, UpstreamClosedEarly):
        return "dropped"
    return "protocol_error"


@functools.lru_cache(maxsize=256)
def replica_label(url: str) -> str:
    """host:port of a replica's base URL: no user info, no path, no query."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.host}:{port}"


class Metrics:
    """What the proxy tells its metrics, and what it does with them switched off
    (PROXY_METRICS=false): nothing."""

    def stream_started(self, model: str) -> None:
        """A stream has its model and goes upstream: it is in flight until it ends."""

    def stream_ended(self, record: StreamRecord, *, started: bool) -> None:
        """A request is over, refused or streamed (`started`: `stream_started` counted it);
        called where its one log line is written, with the final record."""

    def rejected(self, error: ProxyError) -> None:
        """An error answered before the commit point, whoever raised it."""

    def attempt(self, model: str, url: str, result: AttemptResult) -> None:
        """One upstream attempt ended."""

    def replica_up(self, model: str, url: str, up: bool) -> None:
        """A replica left or came back from its cool-down."""

    def close(self) -> None:
        """The worker is stopping."""


class PrometheusMetrics(Metrics):
    """The metrics of one app, in their own registry (tests run several apps in a process)."""

    def __init__(self, models: tuple[str, ...], multiprocess: bool) -> None:
        self._models = frozenset(models)
        self._multiprocess = multiprocess
        # Label values are bounded (see the module's docstring), and so is this.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode values live in files, not in a registry: a scrape reads them
        # all through the collector, so the metric objects register nowhere.
        own = None if multiprocess else self.registry
        if multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self._streams = Counter(
            PREFIX + "streams",
            "Streams by how they ended (the outcome of the stream log line).",
            ("model", "outcome"),
            registry=own,
        )
        self._rejections = Counter(
            PREFIX + "rejections",
            "Error responses before the commit point, by HTTP status and error type.",
            ("status", "type"),
            registry=own,
        )
        # liveall: one series per live worker (a pid label in multiprocess mode), so an
        # uneven spread over workers shows; sum by model for the total.
        self._in_flight = Gauge(
            PREFIX + "streams_in_flight",
            "Streams that have gone upstream and not yet ended.",
            ("model",),
            registry=own,
            multiprocess_mode="liveall",
        )
        self._ttfb = Histogram(
            PREFIX + "time_to_first_byte_seconds",
            "From the request's arrival to its first text, streams past the commit point.",
            ("model",),
            buckets=TTFB_BUCKETS,
            registry=own,
        )
        self._duration = Histogram(
            PREFIX + "stream_duration_seconds",
            "From the request's arrival to the stream's end, streams past the commit point.",
            ("model",),
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        self._bytes = Counter(
            PREFIX + "stream_bytes",
            "UTF-8 text bytes sent to clients.",
            ("model",),
            registry=own,
        )
        self._tokens = Counter(
            PREFIX + "tokens",
            "Tokens the upstream reported using, by kind (prompt, completion).",
            ("model", "kind"),
            registry=own,
        )
        self._attempts = Counter(
            PREFIX + "upstream_attempts",
            "Upstream requests by replica (host:port) and result.",
            ("model", "replica", "result"),
            registry=own,
        )
        # livemin: each worker has its own circuit breaker; a replica is up only when no
        # live worker is resting it.
        self._replica_up = Gauge(
            PREFIX + "replica_up",
            "1 when the replica takes streams, 0 while it cools down after failures.",
            ("model", "replica"),
            registry=own,
            multiprocess_mode="livemin",
        )

    def _child(self, metric: _Metric, *values: str) -> _Metric:
        """The metric's series for these label values, looked up once (`labels` takes a lock
        and checks its arguments on every call)."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _model(self, name: str) -> str:
        return name if name in self._models else UNKNOWN_MODEL

    def stream_started(self, model: str) -> None:
        self._child(self._in_flight, self._model(model)).inc()

    def stream_ended(self, record: StreamRecord, *, started: bool) -> None:
        model = self._model(record.model)
        if started:
            self._child(self._in_flight, model).dec()
        self._child(self._streams, model, record.outcome or "client_disconnected").inc()
        ttfb, duration = record.ttfb, record.duration
        if record.status == 200 and ttfb is not None and duration is not None:
            self._child(self._ttfb, model).observe(ttfb)
            self._child(self._duration, model).observe(duration)
        if record.bytes:
            self._child(self._bytes, model).inc(record.bytes)
        if record.prompt_tokens:
            self._child(self._tokens, model, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            self._child(self._tokens, model, "completion").inc(record.completion_tokens)

    def rejected(self, error: ProxyError) -> None:
        if not isinstance(error, ClientDisconnected):  # nobody was answered
            self._child(self._rejections, str(error.status_code), error.error_type).inc()

    def attempt(self, model: str, url: str, result: AttemptResult) -> None:
        self._child(self._attempts, self._model(model), replica_label(url), result).inc()

    def replica_up(self, model: str, url: str, up: bool) -> None:
        self._child(self._replica_up, self._model(model), replica_label(url)).set(int(up))

    def close(self) -> None:
        if self._multiprocess:
            # A stopped worker's in-flight and replica gauges must not linger in the merge.
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics: the text format, or OpenMetrics when the scraper asks for it."""
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.registry), headers={"Content-Type": content_type})


def create_metrics(settings: Settings) -> Metrics:
    """The app's metrics: Prometheus's, or the no-op ones with PROXY_METRICS=false."""
    if not settings.metrics:
        return Metrics()
    names = tuple(spec.name for spec in settings.models())
    try:
        return PrometheusMetrics(names, multiprocess=multiprocess_metrics(settings))
    except ValueError:  # the library found no shared directory
        raise ConfigError(
            "PROXY_WORKERS: several workers share their metrics through a directory that "
            "`python -m proxy serve` makes; start the proxy with it, or set PROXY_METRICS=false"
        ) from None
