"""The arithmetic of token budgets, as pure functions over values (no I/O, no clock).

A key's budgets are windows: tokens per minute and per day, spend per day and per month,
each a fixed UTC period (a minute, a day, a calendar month) that starts again from zero.
A window counts in units: tokens, or spend in nano-units of the prices' currency (integers,
so Redis adds them exactly). What a stream costs in a window is linear in its tokens:

    cost = prompt_tokens * input_rate + output_tokens * output_rate

(1 and 1 for a token window, the model's prices for a spend window). `grant` is the reserve
step: the output allowance is the largest that fits every window with the prompt estimate,
capped by what the client asked for. The Redis store does the same in Lua (redis_store.py);
the memory store calls these functions.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from proxy.settings import KeyLimits, ModelSpec

WindowName = Literal["tokens_per_minute", "tokens_per_day", "spend_per_day", "spend_per_month"]
WINDOW_NAMES: tuple[WindowName, ...] = (
    "tokens_per_minute",
    "tokens_per_day",
    "spend_per_day",
    "spend_per_month",
)
NANO = 1_000_000_000  # spend units per unit of currency
# Below this many output tokens a stream is not worth starting: refused as over budget
# (a request asking for fewer is granted what it asked for).
MIN_ALLOWANCE = 16


@dataclass(slots=True, frozen=True)
class Window:
    """One limit of one key in its current period."""

    name: WindowName
    period: str  # e.g. "m29012345", "d20150", "M2026-12": part of the storage key
    limit: int  # in units
    input_rate: int  # units per prompt token
    output_rate: int  # units per output token
    resets_at: float  # epoch seconds: the period's end

    def cost(self, prompt_tokens: int, output_tokens: int) -> int:
        return prompt_tokens * self.input_rate + output_tokens * self.output_rate

    @property
    def counts_tokens(self) -> bool:
        return self.name.startswith("tokens")


def token_rate(price_per_mtok: float) -> int:
    """Nano-units per token of a price per million tokens, rounded up (never undercharged)."""
    return math.ceil(round(price_per_mtok * NANO / 1_000_000, 6))


def windows(limits: KeyLimits, model: ModelSpec, now: float) -> tuple[Window, ...]:
    """The key's windows at `now` (epoch seconds), priced for this model."""
    moment = datetime.fromtimestamp(now, UTC)
    minute, day = int(now // 60), int(now // 86400)
    days_in_month = calendar.monthrange(moment.year, moment.month)[1]
    month_start = datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()
    input_rate = token_rate(model.input_price_per_mtok)
    output_rate = token_rate(model.output_price_per_mtok)
    spans: dict[WindowName, tuple[str, float, int, int]] = {
        "tokens_per_minute": (f"m{minute}", (minute + 1) * 60.0, 1, 1),
        "tokens_per_day": (f"d{day}", (day + 1) * 86400.0, 1, 1),
        "spend_per_day": (f"d{day}", (day + 1) * 86400.0, input_rate, output_rate),
        "spend_per_month": (
            f"M{moment.year}-{moment.month:02}",
            month_start + days_in_month * 86400.0,
            input_rate,
            output_rate,
        ),
    }
    found = []
    for name, limit in zip(WINDOW_NAMES, limits.limits(), strict=True):
        if limit is None:
            continue
        period, resets_at, rate_in, rate_out = spans[name]
        units = int(limit) if name.startswith("tokens") else round(limit * NANO)
        found.append(Window(name, period, units, rate_in, rate_out, resets_at))
    return tuple(found)


@dataclass(slots=True, frozen=True)
class Grant:
    """A reservation the windows allow: the output allowance, and its cost in each."""

    allowance: int
    charges: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Refusal:
    """Nothing (or too little) is left: the window that said no."""

    window: int  # its index


def grant(
    windows: tuple[Window, ...],
    used: tuple[int, ...],
    prompt_tokens: int,
    requested: int,
    minimum: int = MIN_ALLOWANCE,
) -> Grant | Refusal:
    """The reserve step: the largest allowance up to `requested` that fits every window
    beside what is `used` (settled and reserved) in it, or the window that refuses."""
    allowance, binding = requested, -1
    for index, (window, spent) in enumerate(zip(windows, used, strict=True)):
        room = window.limit - spent - window.cost(prompt_tokens, 0)
        if room < 0:
            return Refusal(index)
        if window.output_rate > 0 and room // window.output_rate < allowance:
            allowance, binding = room // window.output_rate, index
    if allowance < min(minimum, requested):
        return Refusal(binding)
    return Grant(allowance, tuple(window.cost(prompt_tokens, allowance) for window in windows))


def remaining(window: Window, used: int) -> int:
    """What is left of a window, never below zero."""
    return max(0, window.limit - used)


# What the proxy assumes without a tokenizer (docs/budgets.md). A prompt: every UTF-8 byte
# may be a token (byte-level BPE tokenizers never do worse), plus each message's framing.
# Output that the upstream did not count: one token per four bytes, the common ratio of
# English text; output is cut as over its allowance past eight bytes per token, a ratio
# no model's real text reaches, so an upstream that honours max tokens is never cut.
MESSAGE_OVERHEAD_TOKENS = 8
OUTPUT_BYTES_PER_TOKEN = 4
CUT_BYTES_PER_TOKEN = 8


def prompt_estimate(prompt_bytes: int, messages: int) -> int:
    return prompt_bytes + MESSAGE_OVERHEAD_TOKENS * max(1, messages)


def output_estimate(output_bytes: int) -> int:
    return -(-output_bytes // OUTPUT_BYTES_PER_TOKEN)
