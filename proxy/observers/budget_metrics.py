"""The budgets' metrics (docs/budgets.md), part of PrometheusMetrics' registry. The key
label is a PROXY_KEYS name (configured, so bounded), never a key.

    llm_proxy_budget_tokens_total{key,model,step}   step: reserved, settled, refunded
    llm_proxy_budget_refusals_total{key,window}     429s for a spent budget
    llm_proxy_budget_spend_total{key}               settled spend, in the prices' currency
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from proxy.record import StreamRecord

PREFIX = "llm_proxy_"


class BudgetMetrics:
    def __init__(self, registry: CollectorRegistry | None, model: Callable[[str], str]) -> None:
        self._model = model
        self._tokens = Counter(
            PREFIX + "budget_tokens",
            "Budgeted keys' tokens: reserved at admission, settled at the end, refunded.",
            ("key", "model", "step"),
            registry=registry,
        )
        self._refusals = Counter(
            PREFIX + "budget_refusals",
            "Requests refused (429) because a key's budget window had too little left.",
            ("key", "window"),
            registry=registry,
        )
        self._spend = Counter(
            PREFIX + "budget_spend",
            "Spend settled against budgeted keys, in the currency of the models' prices.",
            ("key",),
            registry=registry,
        )

    def stream_ended(self, record: StreamRecord) -> None:
        budget, key = record.budget, record.client
        if budget is None or key is None:
            return
        if budget.refused is not None:
            self._refusals.labels(key, budget.refused).inc()
            return
        model = self._model(record.model)
        self._tokens.labels(key, model, "reserved").inc(budget.reserved_tokens)
        if budget.settled_tokens is not None:
            self._tokens.labels(key, model, "settled").inc(budget.settled_tokens)
            self._tokens.labels(key, model, "refunded").inc(budget.refunded_tokens)
        if budget.spend:
            self._spend.labels(key).inc(budget.spend)
