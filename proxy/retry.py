"""The retry policy before the commit point (SPEC §1), as pure functions of one failure."""

from __future__ import annotations

import random

from proxy.errors import (
    UpstreamClosedEarly,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from proxy.settings import RetryPolicy


def retry_delay(policy: RetryPolicy, exc: UpstreamError, attempts: int) -> float | None:
    """Seconds to wait before another attempt after this failure, or None: no retry."""
    if not exc.retryable or attempts > policy.retries:
        return None
    backoff = policy.backoff * 2.0 ** (attempts - 1) * random.uniform(0.5, 1.5)
    if exc.retry_after is not None:
        return max(backoff, min(exc.retry_after, policy.max_retry_after))
    return backoff


def replica_at_fault(exc: UpstreamError) -> bool:
    """Whether a failure says the replica is unwell (rest it) rather than the request."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500
    return isinstance(exc, UpstreamUnavailable | UpstreamConnectTimeout | UpstreamClosedEarly)
