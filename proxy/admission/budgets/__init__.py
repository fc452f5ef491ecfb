"""Token and spend budgets per named client key (PROXY_KEYS; docs/budgets.md).

ledger.py       the arithmetic: windows, the reserve step, the estimates (pure)
store.py        the stores' shape, and the one in memory
redis_store.py  the one in Redis, shared by every replica (one Lua script per step)
headers.py      x-ratelimit-* headers and GET /v1/usage's windows
budgets.py      `Budgets` (one per app) and the `Reservation` one stream holds
"""

from __future__ import annotations

import redis.asyncio as redis

from proxy.admission.budgets.budgets import Budgets, Reservation
from proxy.admission.budgets.redis_store import RedisBudgetStore
from proxy.admission.budgets.store import BudgetStore, MemoryBudgetStore
from proxy.settings import AdmissionPolicy

__all__ = [
    "BudgetStore",
    "Budgets",
    "MemoryBudgetStore",
    "RedisBudgetStore",
    "Reservation",
    "budgets_of",
]


def budgets_of(policy: AdmissionPolicy, client: redis.Redis | None) -> Budgets:
    """The policy's budgets: in Redis when the proxy has one, else in this process."""
    store: BudgetStore = MemoryBudgetStore() if client is None else RedisBudgetStore(client)
    # A reservation outlives its stream's longest life; a replica that died frees it then.
    return Budgets(
        policy.named_keys,
        store,
        fail_open=policy.budget_fail_open,
        hold_expiry=policy.slot_expiry,
        timeout=policy.redis_timeout,
    )
