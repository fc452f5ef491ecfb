"""`Admission`: everything that decides whether a stream may start, built once per app."""

from __future__ import annotations

from proxy.admission.backend import connect
from proxy.admission.budgets import Budgets, budgets_of
from proxy.admission.cap import StreamSlots
from proxy.admission.keys import ClientKeys
from proxy.admission.rate_limits import client_limits
from proxy.admission.ticket import AdmissionTicket, Headers
from proxy.errors import BudgetUnavailable
from proxy.settings import AdmissionPolicy, ModelSpec


class Admission:
    """The keys, the cap, the client limits and the budgets; one Redis client for them all."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.keys = ClientKeys(policy.client_keys, policy.named_keys)
        self.slots = StreamSlots(policy.max_concurrent_streams)
        self.redis = connect(policy)
        self.client_limits = client_limits(policy, self.redis)
        self.budgets: Budgets = budgets_of(policy, self.redis)

    async def admit(self, client: str | None, peer: str) -> AdmissionTicket:
        """A ticket holding this stream's slots; Overloaded or RateLimited when refused
        (then nothing is held)."""
        ticket = AdmissionTicket(self.slots, self.client_limits, self.budgets)
        try:
            await ticket.take(client, peer)
        except BaseException:
            await ticket.release()
            raise
        return ticket

    async def rate_limit_headers(self, client: str | None, model: ModelSpec) -> Headers:
        """A budgeted key's x-ratelimit-* headers as its windows stand (none for a key without
        budgets, or while their store is down)."""
        if self.budgets.limits(client) is None:
            return ()
        assert client is not None
        try:
            _, headers = await self.budgets.usage(client, model)
        except BudgetUnavailable:
            return ()
        return headers

    async def aclose(self) -> None:
        await self.client_limits.aclose()
        await self.budgets.aclose()
        if self.redis is not None:
            await self.redis.aclose()
