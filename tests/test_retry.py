"""The retry policy's pure functions (proxy/retry.py): unit tests, no server."""

from __future__ import annotations

import pytest

from proxy.errors import (
    UpstreamClosedEarly,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.retry import replica_at_fault, retry_delay
from proxy.settings import RetryPolicy

POLICY = RetryPolicy(retries=2, backoff=0.25, max_retry_after=5.0)


def test_a_retryable_failure_backs_off_exponentially_with_jitter() -> None:
    failure = UpstreamUnavailable("down")
    for attempts, base in ((1, 0.25), (2, 0.5)):
        delay = retry_delay(POLICY, failure, attempts)
        assert delay is not None
        assert 0.5 * base <= delay <= 1.5 * base


def test_no_retry_once_the_retries_are_spent() -> None:
    assert retry_delay(POLICY, UpstreamUnavailable("down"), attempts=3) is None


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamStatusError("bad request", upstream_status=400),
        UpstreamProtocolError("garbage"),
        UpstreamTimeout("no first token"),
    ],
)
def test_a_failure_another_attempt_cannot_mend_is_not_retried(failure: UpstreamError) -> None:
    assert retry_delay(POLICY, failure, attempts=1) is None


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    asked = UpstreamStatusError("slow down", upstream_status=429, retry_after=2.0)
    assert retry_delay(POLICY, asked, attempts=1) == 2.0
    greedy = UpstreamStatusError("slow down", upstream_status=429, retry_after=60.0)
    assert retry_delay(POLICY, greedy, attempts=1) == POLICY.max_retry_after


@pytest.mark.parametrize(
    ("failure", "at_fault"),
    [
        (UpstreamStatusError("oops", upstream_status=503), True),
        (UpstreamStatusError("limited", upstream_status=429), False),
        (UpstreamStatusError("bad", upstream_status=400), False),
        (UpstreamUnavailable("refused"), True),
        (UpstreamConnectTimeout("slow connect"), True),
        (UpstreamClosedEarly("dropped"), True),
        (UpstreamProtocolError("garbage"), False),
    ],
)
def test_only_a_replica_that_is_unwell_is_rested(failure: UpstreamError, at_fault: bool) -> None:
    assert replica_at_fault(failure) is at_fault
