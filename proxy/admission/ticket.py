"""The admission ticket: what one admitted stream holds until it ends, released once.

A slot under the proxy's cap, a per-client stream slot where that limit is on, and a budgeted
key's reservation (settled on release). The ticket is handed the parts it takes from; it
writes no record: it hands its session values (the budget's note, the response's headers).
"""

from __future__ import annotations

from proxy.admission.budgets import Budgets, Reservation
from proxy.admission.cap import StreamSlots
from proxy.admission.rate_limits import ClientLimits
from proxy.conversation import Conversation
from proxy.errors import BudgetExceeded, OutputLimitReached
from proxy.settings import ModelSpec
from proxy.values import NO_USAGE, BudgetNote, Usage

Headers = tuple[tuple[str, str], ...]


class AdmissionTicket:
    __slots__ = (
        "_budgets",
        "_client",
        "_client_slot",
        "_holds_slot",
        "_limits",
        "_request_headers",
        "_reservation",
        "_slots",
        "budget",
        "headers",
    )

    def __init__(self, slots: StreamSlots, limits: ClientLimits, budgets: Budgets) -> None:
        self._slots, self._limits, self._budgets = slots, limits, budgets
        self._client: str | None = None
        self._holds_slot = False
        self._client_slot: str | None = None  # whose per-client slot, if one is held
        self._reservation: Reservation | None = None
        self._request_headers: Headers = ()
        # What the key's budget did for this stream: reserved, refused, then settled.
        self.budget: BudgetNote | None = None
        # A budgeted key's x-ratelimit-* headers once its budget has reserved, kept after the
        # release for an error answered then: the requests' (PROXY_RATE_LIMIT), the tokens'.
        self.headers: Headers = ()

    async def take(self, client: str | None, peer: str) -> None:
        """Called once, by Admission.admit: Overloaded or RateLimited when refused."""
        self._client = client
        self._slots.acquire()
        self._holds_slot = True
        if self._limits.active:
            identity = client or f"ip:{peer}"
            if await self._limits.admit(identity):
                self._client_slot = identity
            if self._budgets.limits(client) is not None:  # told on its response
                self._request_headers = await self._limits.request_headers(identity)

    async def reserve(self, model: ModelSpec, conversation: Conversation) -> Conversation:
        """A budgeted key's reservation for this stream (429 when its budget is spent): the
        conversation asks for at most its allowance. Others' conversations pass as they are."""
        if self._budgets.limits(self._client) is None:
            return conversation
        assert self._client is not None
        try:
            reservation = await self._budgets.reserve(self._client, model, conversation)
        except BudgetExceeded as refusal:
            self.budget = BudgetNote(0, refused=refusal.window)
            raise
        self._reservation, self.budget = reservation, reservation.note
        self.headers = self._request_headers + reservation.headers
        return reservation.conversation

    def past_allowance(
        self, produced_bytes: int, produced_deltas: int
    ) -> OutputLimitReached | None:
        """OutputLimitReached once a budgeted stream's output has passed its allowance."""
        reservation = self._reservation
        return (
            None
            if reservation is None
            else reservation.past_allowance(produced_bytes, produced_deltas)
        )

    async def release(self, usage: Usage = NO_USAGE, produced_bytes: int = 0) -> None:
        """Let go of every slot, and settle the reservation at what the stream produced."""
        if self._holds_slot:
            self._holds_slot = False
            self._slots.release()
        reservation, self._reservation = self._reservation, None
        identity, self._client_slot = self._client_slot, None
        try:
            if reservation is not None:
                self.budget = await reservation.settle(usage, produced_bytes)
        finally:
            if identity is not None:
                await self._limits.release(identity)
