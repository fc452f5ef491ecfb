"""A key's budgets at work: the reservation one stream holds, and what makes them.

reservation = await budgets.reserve(name, model, conversation, record)  # or 429 / 503
reservation.conversation          # asks the upstream for at most the allowance
reservation.check_output(bytes, deltas)  # OutputLimitReached past the allowance
await reservation.settle()        # once, at the end: the real cost, the rest refunded
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis

from proxy.budgets.headers import rate_limit_headers, window_usage
from proxy.budgets.ledger import (
    CUT_BYTES_PER_TOKEN,
    NANO,
    Refusal,
    output_estimate,
    prompt_estimate,
    token_rate,
    windows,
)
from proxy.budgets.store import BudgetStore, Claim
from proxy.conversation import Conversation
from proxy.errors import BudgetExceeded, BudgetUnavailable, OutputLimitReached
from proxy.record import BudgetNote, StreamRecord
from proxy.redis_retry import REDIS_ERRORS
from proxy.settings import ClientKeySpec, KeyLimits, ModelSpec
from proxy.values import utf8_length

logger = logging.getLogger("proxy.budgets")
T = TypeVar("T")

STORE_ERRORS = REDIS_ERRORS
# Undoing a reservation that timed out runs in the background and must reach a slow Redis.
UNDO_TIMEOUT = 10.0
_PREFIX = "llm-stream-proxy:budget:"


def conversation_bytes(conversation: Conversation) -> int:
    text = sum(utf8_length(message.content) for message in conversation.messages)
    return text + utf8_length(conversation.system or "")


def unavailable() -> BudgetUnavailable:
    return BudgetUnavailable(
        "token budgets are unavailable (their Redis does not answer); retry shortly",
        retry_after=1,
    )


class Reservation:
    """What one stream holds of its key's budgets, from admission to its settlement."""

    __slots__ = (
        "_budgets",
        "_claim",
        "_rates",
        "_stored",
        "conversation",
        "cutoff",
        "note",
        "record",
    )

    def __init__(
        self,
        budgets: Budgets,
        record: StreamRecord,
        conversation: Conversation,
        claim: Claim,
        model: ModelSpec,
        *,
        stored: bool,
    ) -> None:
        self._budgets = budgets
        self._rates = (
            token_rate(model.input_price_per_mtok),
            token_rate(model.output_price_per_mtok),
        )
        self.record = record
        self.conversation = conversation
        self._claim = claim
        self._stored = stored  # False: admitted while the store was down (fail-open)
        self.note = record.budget = BudgetNote(claim.prompt_tokens + (conversation.max_tokens or 0))
        self.cutoff = (conversation.max_tokens or 0) * CUT_BYTES_PER_TOKEN

    def check_output(self, produced_bytes: int, produced_deltas: int) -> None:
        """An upstream that ignores its max tokens is cut here, by whichever count passes the
        allowance first (docs/budgets.md)."""
        if produced_deltas > (self.conversation.max_tokens or 0) or produced_bytes > self.cutoff:
            raise OutputLimitReached(
                f"the output passed this key's allowance of {self.conversation.max_tokens} "
                "tokens (the upstream ignored its max tokens)"
            )

    def cost(self) -> tuple[int, int, bool]:
        """Prompt and output tokens to charge, and whether the proxy estimated them."""
        usage, produced = self.record.usage, self.record.output_bytes
        if not usage.known and produced == 0:
            return 0, 0, False  # nothing came, and nothing was counted: nothing to charge
        prompt = usage.prompt_tokens
        output = usage.completion_tokens
        estimated = prompt is None or output is None
        return (
            prompt if prompt is not None else self._claim.prompt_tokens,
            output if output is not None else output_estimate(produced),
            estimated,
        )

    async def settle(self) -> None:
        """The stream's real cost; the rest of the reservation goes back. Once."""
        prompt, output, estimated = self.cost()
        note = self.note
        note.settled_tokens, note.estimated = prompt + output, estimated
        charges = tuple(window.cost(prompt, output) for window in self._claim.windows)
        rate_in, rate_out = self._rates
        note.spend = (prompt * rate_in + output * rate_out) / NANO
        if self._stored:
            await self._budgets.settle(self._claim, charges)


class Budgets:
    """PROXY_KEYS' budgets, in one store; built once per app."""

    def __init__(
        self,
        keys: tuple[ClientKeySpec, ...],
        store: BudgetStore,
        *,
        fail_open: bool,
        hold_expiry: float,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = timeout  # PROXY_REDIS_TIMEOUT: a store slower than this is down
        self._undoing: set[asyncio.Task[None]] = set()
        self._limits = {key.name: key.limits for key in keys if key.limits.any}
        self._store = store
        self._fail_open = fail_open
        self._hold_expiry = hold_expiry
        self._clock = clock
        self._last_warning = 0.0

    def limits(self, name: str | None) -> KeyLimits | None:
        return self._limits.get(name) if name is not None else None

    def _claim(self, name: str, model: ModelSpec, now: float, **ask: int) -> Claim:
        found = windows(self._limits[name], model, now)
        keys = tuple(f"{_PREFIX}{name}:{window.name}:{window.period}" for window in found)
        hold = os.urandom(8).hex()
        return Claim(keys, found, hold, deadline=now + self._hold_expiry, **ask)

    async def reserve(
        self, name: str, model: ModelSpec, conversation: Conversation, record: StreamRecord
    ) -> Reservation:
        """The stream's reservation, its allowance in its conversation's max_tokens;
        BudgetExceeded (429) when too little is left, BudgetUnavailable (503) when the store
        is down (unless PROXY_BUDGET_FAIL_OPEN)."""
        now = self._clock()
        prompt = prompt_estimate(conversation_bytes(conversation), len(conversation.messages))
        requested = min(conversation.max_tokens or model.max_tokens, model.max_tokens)
        claim = self._claim(name, model, now, prompt_tokens=prompt, requested=requested)
        try:
            decision, counts = await self._call(self._store.reserve(claim, now))
        except STORE_ERRORS as exc:
            if isinstance(exc, TimeoutError | redis.TimeoutError):  # it may still run, late
                self._undo_later(claim)
            self.warn("reserving", exc)
            if not self._fail_open:
                raise unavailable() from None
            capped = dataclasses.replace(conversation, max_tokens=requested)
            return Reservation(self, record, capped, claim, model, stored=False)
        if isinstance(decision, Refusal):
            window = claim.windows[decision.window]
            record.budget = BudgetNote(0, refused=window.name)
            raise BudgetExceeded(
                f"this key's {window.name} budget is spent; it resets at the window's end",
                retry_after=max(1.0, window.resets_at - now),
                headers=rate_limit_headers(claim.windows, None, now, refused=decision.window),
            )
        capped = dataclasses.replace(conversation, max_tokens=decision.allowance)
        reservation = Reservation(self, record, capped, claim, model, stored=True)
        reservation.note.headers = rate_limit_headers(claim.windows, counts, now)
        return reservation

    async def settle(self, claim: Claim, charges: tuple[int, ...]) -> None:
        """A store that is down keeps the hold until its deadline: the budget is safe."""
        try:
            await self._call(self._store.settle(claim, charges, self._clock()))
        except STORE_ERRORS as exc:
            self.warn("settling", exc)

    async def usage(
        self, name: str, model: ModelSpec
    ) -> tuple[list[dict[str, object]], tuple[tuple[str, str], ...]]:
        """GET /v1/usage: each window's limit, what is used of it and when it resets, and
        the x-ratelimit-* headers; BudgetUnavailable when the store is down."""
        now = self._clock()
        claim = self._claim(name, model, now, prompt_tokens=0, requested=0)
        try:
            counts = await self._call(self._store.counts(claim.keys, now))
        except STORE_ERRORS as exc:
            self.warn("reading", exc)
            raise unavailable() from None
        pairs = zip(claim.windows, counts, strict=True)
        shown = [window_usage(window, count, now) for window, count in pairs]
        return shown, rate_limit_headers(claim.windows, counts, now)

    async def _call(self, step: Awaitable[T]) -> T:
        async with asyncio.timeout(self._timeout):
            return await step

    def _undo_later(self, claim: Claim) -> None:
        task = asyncio.get_running_loop().create_task(self._undo(claim))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def _undo(self, claim: Claim) -> None:
        try:
            async with asyncio.timeout(UNDO_TIMEOUT):
                await self._store.undo(claim, self._clock())
        except STORE_ERRORS as exc:  # the hold, if it was made, lapses at its deadline
            self.warn("undoing a reservation", exc)

    async def aclose(self) -> None:
        """Waits for the undos still running (each bounded)."""
        await asyncio.gather(*self._undoing, return_exceptions=True)

    def warn(self, doing: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            logger.warning(
                "budget store unavailable while %s, %s",
                doing,
                "serving budgeted keys without their budgets"
                if self._fail_open
                else "refusing budgeted keys",
                extra={"fields": {"error": type(exc).__name__}},
            )
