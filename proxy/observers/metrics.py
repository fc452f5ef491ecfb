"""Prometheus metrics: what an operator watches, observed once per stream and per attempt.

Names carry one prefix, `llm_proxy_`. Labels stay bounded: configured model names (any other
name a client sends becomes "-"), the log line's outcomes, our own statuses and error types,
attempt results from a fixed set, replicas as host:port, and PROXY_KEYS names (configured).
Never a request id, a key, a plain key's client id, or a URL's user info or path.

    llm_proxy_streams_total{model,outcome}              every stream log line
    llm_proxy_rejections_total{status,type}             every error answered before the commit
    llm_proxy_streams_in_flight{model}                  streams gone upstream, not yet ended
    llm_proxy_time_to_first_byte_seconds{model}         histogram, streams past the commit point
    llm_proxy_stream_duration_seconds{model}            histogram, the same streams
    llm_proxy_stream_bytes_total{model}                 text bytes sent to clients
    llm_proxy_tokens_total{model,kind}                  usage the upstream reported
    llm_proxy_upstream_attempts_total{model,replica,result}
    llm_proxy_replica_up{model,replica}                 1 unless the replica is cooling down
    llm_proxy_budget_*                                  named keys' budgets (budget_metrics.py)
    llm_proxy_time_to_first_part_seconds{model}         and the rest of part_metrics.py

With several workers (PROXY_WORKERS > 1) prometheus-client's multiprocess mode is on (see
`proxy.multiprocess`): each worker writes its values to files in one directory and a scrape
of any worker merges every worker's files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy.multiprocess import multiprocess_metrics
from proxy.observers import StreamObserver
from proxy.observers.budget_metrics import BudgetMetrics
from proxy.observers.part_metrics import PREFIX, TTFB_BUCKETS, PartMetrics
from proxy.record import AttemptRecord, StreamRecord
from proxy.settings import ConfigError, Settings
from proxy.urls import PublicURL

# Whole streams: a one-word answer to a ten-minute generation (the total timeout's default).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
UNKNOWN_MODEL = "-"

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


class PrometheusMetrics(StreamObserver):
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
        self._define_stream_metrics(own)
        self._define_upstream_metrics(own)
        self._budgets = BudgetMetrics(own, self._model)
        self._parts = PartMetrics(own)

    def _define_stream_metrics(self, own: CollectorRegistry | None) -> None:
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

    def _define_upstream_metrics(self, own: CollectorRegistry | None) -> None:
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

    def stream_started(self, record: StreamRecord) -> None:
        self._child(self._in_flight, self._model(record.model)).inc()

    def stream_ended(self, record: StreamRecord) -> None:
        model = self._model(record.model)
        if record.went_upstream:
            self._child(self._in_flight, model).dec()
        self._child(self._streams, model, record.outcome or "client_disconnected").inc()
        if record.rejected:
            status, error_type = str(record.status), record.error_type or "-"
            self._child(self._rejections, status, error_type).inc()
        ttfb, duration = record.ttfb, record.duration
        if record.status == 200 and ttfb is not None and duration is not None:
            self._child(self._ttfb, model).observe(ttfb)
            self._child(self._duration, model).observe(duration)
        self._parts.stream_ended(record, model)
        if record.bytes:
            self._child(self._bytes, model).inc(record.bytes)
        usage = record.usage
        if usage.prompt_tokens:
            self._child(self._tokens, model, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self._child(self._tokens, model, "completion").inc(usage.completion_tokens)
        self._budgets.stream_ended(record)

    def attempt_ended(self, attempt: AttemptRecord) -> None:
        model = self._model(attempt.model)
        self._child(self._attempts, model, attempt.replica.label, attempt.result).inc()

    def replica_health(self, model: str) -> Callable[[PublicURL, bool], None]:
        """What a model's balancer tells when a replica leaves or comes back from its
        cool-down."""
        model = self._model(model)

        def replica_up(replica: PublicURL, up: bool) -> None:
            self._child(self._replica_up, model, replica.label).set(int(up))

        return replica_up

    def close(self) -> None:
        if self._multiprocess:
            # A stopped worker's in-flight and replica gauges must not linger in the merge.
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """GET /metrics: the text format, or OpenMetrics when the scraper asks for it."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def create_metrics(settings: Settings) -> PrometheusMetrics | None:
    """The app's metrics, or None with PROXY_METRICS=false."""
    if not settings.metrics:
        return None
    names = tuple(spec.name for spec in settings.models)
    try:
        return PrometheusMetrics(names, multiprocess=multiprocess_metrics(settings))
    except ValueError:  # the library found no shared directory
        raise ConfigError(
            "PROXY_WORKERS",
            "several workers share their metrics through a directory that "
            "`python -m proxy serve` makes; start the proxy with it, or set PROXY_METRICS=false",
        ) from None
