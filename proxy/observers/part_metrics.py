"""What a stream's parts did (SPEC §5g) and the race for its first part (§5j), part of
PrometheusMetrics' registry:

llm_proxy_time_to_first_part_seconds{model}   histogram: to the upstream's first part of
                                              any kind (what the first-token deadline counts)
llm_proxy_time_to_first_text_seconds{model}   histogram: to the answer's first text (after
                                              a thinking model's thoughts)
llm_proxy_stream_deltas_total{model,kind}     deltas relayed: text, reasoning
llm_proxy_hedges_total{model,result}          hedges started, by whether the hedge won the
                                              race (`won`) or the first attempt did (`lost`:
                                              its upstream work was wasted)

A lost hedge had streamed no part: a racer is closed the moment the other's first part comes,
so what it cost is its prompt's processing, which no upstream reports for a request it saw
cancelled (the attempts counter shows it as `result="hedge_lost"`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from proxy.record import StreamRecord

PREFIX = "llm_proxy_"
# LLM latencies: a cached prompt's first token comes in tens of milliseconds, a busy large
# model's after tens of seconds (the first-token timeout defaults to 60 s).
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PartMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._first_part = Histogram(
            PREFIX + "time_to_first_part_seconds",
            "From the request's arrival to the upstream's first part of any kind.",
            ("model",),
            buckets=TTFB_BUCKETS,
            registry=registry,
        )
        self._first_text = Histogram(
            PREFIX + "time_to_first_text_seconds",
            "From the request's arrival to the answer's first text.",
            ("model",),
            buckets=TTFB_BUCKETS,
            registry=registry,
        )
        self._deltas = Counter(
            PREFIX + "stream_deltas",
            "Deltas relayed, by kind (text, reasoning).",
            ("model", "kind"),
            registry=registry,
        )
        self._hedges = Counter(
            PREFIX + "hedges",
            "Hedges started, by who won the race for the first part (won: the hedge).",
            ("model", "result"),
            registry=registry,
        )

    def stream_ended(self, record: StreamRecord, model: str) -> None:
        if record.first_part is not None:
            self._first_part.labels(model).observe(record.first_part)
        if record.first_text is not None:
            self._first_text.labels(model).observe(record.first_text)
        if record.deltas:
            self._deltas.labels(model, "text").inc(record.deltas)
        if record.reasoning_deltas:
            self._deltas.labels(model, "reasoning").inc(record.reasoning_deltas)
        if record.hedged:
            self._hedges.labels(model, "won" if record.hedge_won else "lost").inc()
