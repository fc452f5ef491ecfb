"""A key's budgets at work: the reservation one stream holds, and what makes them.

reservation = await budgets.reserve(name, model, conversation)   # or 429 / 503
reservation.conversation          # asks the upstream for at most the allowance
reservation.note, .headers        # what it reserved; x-ratelimit-* for its response
reservation.past_allowance(bytes, deltas)  # OutputLimitReached past the allowance, or None
note = await reservation.settle(usage, bytes)   # once, at the end: the real cost, the rest refunded

Values go up, never a record: the stream's session writes what it is handed into its record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable

import redis.asyncio as redis

from proxy.admission.backend import STORE_ERRORS, ThrottledWarning, Undos, bounded
from proxy.admission.budgets.headers import rate_limit_headers, window_usage
from proxy.admission.budgets.ledger import (
    CUT_BYTES_PER_TOKEN,
    NANO,
    Refusal,
    output_estimate,
    prompt_estimate,
    token_rate,
    windows,
)
from proxy.admission.budgets.store import BudgetStore, Claim
from proxy.conversation import Conversation
from proxy.errors import BudgetExceeded, BudgetUnavailable, OutputLimitReached
from proxy.settings import ClientKeySpec, KeyLimits, ModelSpec
from proxy.values import BudgetNote, Usage, utf8_length

logger = logging.getLogger("proxy.budgets")
Headers = tuple[tuple[str, str], ...]

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

    __slots__ = ("_budgets", "_claim", "_rates", "_stored", "conversation", "headers", "note")

    def __init__(
        self,
        budgets: Budgets,
        conversation: Conversation,
        claim: Claim,
        model: ModelSpec,
        *,
        stored: bool,
        headers: Headers = (),
    ) -> None:
        self._budgets = budgets
        self._rates = (
            token_rate(model.input_price_per_mtok),
            token_rate(model.output_price_per_mtok),
        )
        self.conversation = conversation
        self._claim = claim
        self._stored = stored  # False: admitted while the store was down (fail-open)
        self.note = BudgetNote(claim.prompt_tokens + (conversation.max_tokens or 0))
        self.headers = headers  # x-ratelimit-*-tokens as the windows stand after it

    @property
    def allowance(self) -> int:
        return self.conversation.max_tokens or 0

    def past_allowance(
        self, produced_bytes: int, produced_deltas: int
    ) -> OutputLimitReached | None:
        """Where an upstream that ignores its max tokens is cut: once either count passes the
        allowance, the parts (about a token each) or the bytes (8 a token; docs/budgets.md)."""
        allowance = self.allowance
        if produced_deltas > allowance or produced_bytes > allowance * CUT_BYTES_PER_TOKEN:
            return OutputLimitReached(
                f"the output passed this key's allowance of {allowance} "
                "tokens (the upstream ignored its max tokens)"
            )
        return None

    def cost(self, usage: Usage, produced_bytes: int) -> tuple[int, int, bool]:
        """Prompt and output tokens to charge, and whether the proxy estimated them."""
        if not usage.known and produced_bytes == 0:
            return 0, 0, False  # nothing came, and nothing was counted: nothing to charge
        prompt = usage.prompt_tokens
        output = usage.completion_tokens
        estimated = prompt is None or output is None
        return (
            prompt if prompt is not None else self._claim.prompt_tokens,
            output if output is not None else output_estimate(produced_bytes),
            estimated,
        )

    async def settle(self, usage: Usage, produced_bytes: int) -> BudgetNote:
        """The stream's real cost; the rest of the reservation goes back. Once."""
        prompt, output, estimated = self.cost(usage, produced_bytes)
        charges = tuple(window.cost(prompt, output) for window in self._claim.windows)
        rate_in, rate_out = self._rates
        self.note = dataclasses.replace(
            self.note,
            settled_tokens=prompt + output,
            estimated=estimated,
            spend=(prompt * rate_in + output * rate_out) / NANO,
        )
        if self._stored:
            await self._budgets.settle(self._claim, charges)
        return self.note


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
        self._undos = Undos(lambda exc: self.warn("undoing a reservation", exc))
        self._limits = {key.name: key.limits for key in keys if key.limits.any}
        self._store = store
        self._fail_open = fail_open
        self._hold_expiry = hold_expiry
        self._clock = clock
        self._warn = ThrottledWarning(logger)

    def limits(self, name: str | None) -> KeyLimits | None:
        return self._limits.get(name) if name is not None else None

    def _claim(self, name: str, model: ModelSpec, now: float, **ask: int) -> Claim:
        found = windows(self._limits[name], model, now)
        keys = tuple(f"{_PREFIX}{name}:{window.name}:{window.period}" for window in found)
        hold = os.urandom(8).hex()
        return Claim(keys, found, hold, deadline=now + self._hold_expiry, **ask)

    async def reserve(self, name: str, model: ModelSpec, conversation: Conversation) -> Reservation:
        """The stream's reservation, its allowance in its conversation's max_tokens;
        BudgetExceeded (429) when too little is left, BudgetUnavailable (503) when the store
        is down (unless PROXY_BUDGET_FAIL_OPEN)."""
        now = self._clock()
        prompt = prompt_estimate(conversation_bytes(conversation), len(conversation.messages))
        requested = min(conversation.max_tokens or model.max_tokens, model.max_tokens)
        claim = self._claim(name, model, now, prompt_tokens=prompt, requested=requested)
        try:
            decision, counts = await bounded(self._timeout, self._store.reserve(claim, now))
        except STORE_ERRORS as exc:
            if isinstance(exc, TimeoutError | redis.TimeoutError):  # it may still run, late
                self._undos.later(lambda: self._store.undo(claim, self._clock()))
            self.warn("reserving", exc)
            if not self._fail_open:
                raise unavailable() from None
            capped = dataclasses.replace(conversation, max_tokens=requested)
            return Reservation(self, capped, claim, model, stored=False)
        if isinstance(decision, Refusal):
            window = claim.windows[decision.window]
            raise BudgetExceeded(
                f"this key's {window.name} budget is spent; it resets at the window's end",
                retry_after=max(1.0, window.resets_at - now),
                window=window.name,
                headers=rate_limit_headers(claim.windows, None, now, refused=decision.window),
            )
        capped = dataclasses.replace(conversation, max_tokens=decision.allowance)
        headers = rate_limit_headers(claim.windows, counts, now)
        return Reservation(self, capped, claim, model, stored=True, headers=headers)

    async def settle(self, claim: Claim, charges: tuple[int, ...]) -> None:
        """A store that is down keeps the hold until its deadline: the budget is safe."""
        try:
            await bounded(self._timeout, self._store.settle(claim, charges, self._clock()))
        except STORE_ERRORS as exc:
            self.warn("settling", exc)

    async def usage(self, name: str, model: ModelSpec) -> tuple[list[dict[str, object]], Headers]:
        """GET /v1/usage: each window's limit, what is used of it and when it resets, and
        the x-ratelimit-* headers; BudgetUnavailable when the store is down."""
        now = self._clock()
        claim = self._claim(name, model, now, prompt_tokens=0, requested=0)
        try:
            counts = await bounded(self._timeout, self._store.counts(claim.keys, now))
        except STORE_ERRORS as exc:
            self.warn("reading", exc)
            raise unavailable() from None
        pairs = zip(claim.windows, counts, strict=True)
        shown = [window_usage(window, count, now) for window, count in pairs]
        return shown, rate_limit_headers(claim.windows, counts, now)

    async def aclose(self) -> None:
        """Waits for the undos still running (each bounded)."""
        await self._undos.aclose()

    def warn(self, doing: str, exc: BaseException) -> None:
        serving = "serving budgeted keys without their budgets" if self._fail_open else None
        self._warn(
            exc, "budget store unavailable while %s, %s", doing, serving or "refusing budgeted keys"
        )
