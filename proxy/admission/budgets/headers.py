"""What a budgeted key is told about its budgets: OpenAI's rate-limit headers on every
response, and its windows on GET /v1/usage."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from proxy.admission.budgets.ledger import NANO, Window, remaining

# OpenAI's rate-limit headers, as a budgeted key's responses carry them.
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{unit}"
    for unit in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
)


def reset_duration(seconds: float) -> str:
    """OpenAI's way of writing a reset: 1s, 6m0s, 1h2m3s."""
    whole = max(1, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_limit_headers(
    windows: tuple[Window, ...],
    counts: tuple[int, ...] | None,
    now: float,
    *,
    refused: int | None = None,
) -> tuple[tuple[str, str], ...]:
    """x-ratelimit-{limit,remaining,reset}-tokens of the key's tightest token window (the
    one with least left; after a refusal, the refusing one). None where the key has no
    token window (spend only): its refusals still carry Retry-After."""
    if refused is not None:
        window = windows[refused]
        if not window.counts_tokens:
            return ()
        left = 0
    else:
        candidates = [
            (remaining(window, count), index)
            for index, (window, count) in enumerate(zip(windows, counts or (), strict=False))
            if window.counts_tokens
        ]
        if not candidates:
            return ()
        left, index = min(candidates)
        window = windows[index]
    return (
        ("x-ratelimit-limit-tokens", str(window.limit)),
        ("x-ratelimit-remaining-tokens", str(left)),
        ("x-ratelimit-reset-tokens", reset_duration(window.resets_at - now)),
    )


def window_usage(window: Window, count: int, now: float) -> dict[str, object]:
    """One window as GET /v1/usage shows it: tokens, or spend in the prices' currency."""
    scale = 1 if window.counts_tokens else NANO
    return {
        "window": window.name,
        "limit": window.limit / scale if scale != 1 else window.limit,
        "used": count / scale if scale != 1 else count,
        "remaining": remaining(window, count) / scale if scale != 1 else remaining(window, count),
        "resets_at": datetime.fromtimestamp(window.resets_at, UTC).isoformat(),
        "resets_in_seconds": max(0, math.ceil(window.resets_at - now)),
    }
