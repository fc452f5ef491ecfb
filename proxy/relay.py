"""Reaching the commit point (SPEC §1, §5g, §5j): attempts one after another on a model's
replicas, under the retry policy (proxy/retry.py), until one has the first part the response's
format carries, or the deadline passes. Each attempt may race a hedge for its first part
(proxy/hedge.py). Every attempt's end is observed; a failed one is closed before the next.

The deadline is the first-token deadline, pushed back by the idle timeout each time a part
arrives that the format does not carry (a thinking model's reasoning before a raw-text
answer): the upstream is making progress, as the idle deadline counts it after the commit
point, so a long thought is not cut off while it streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import orjson

from proxy.attempt import UpstreamAttempt
from proxy.dialects import UpstreamRequest
from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.hedge import race
from proxy.parts import Part
from proxy.record import AttemptRecord, AttemptResult, AttemptStarted, StreamRecord, attempt_result
from proxy.retry import replica_at_fault, retry_delay
from proxy.services import Services
from proxy.upstreams import Upstream


class Relay:
    __slots__ = ("_attempts", "_began", "_deadline", "_record", "_services", "_upstream")

    def __init__(self, services: Services, upstream: Upstream, record: StreamRecord) -> None:
        self._services = services
        self._upstream = upstream
        self._record = record
        self._began = 0.0
        self._deadline: asyncio.Timeout | None = None
        self._attempts: Attempts | None = None

    async def commit(
        self, request: UpstreamRequest, started: float, text_only: bool
    ) -> tuple[UpstreamAttempt, Part | None]:
        """The attempt that reached the commit point, and its first part the format carries
        (text alone, or any part); None: the body ended whole without one."""
        self._began = started
        attempts = self._attempts = Attempts(self._services, self._upstream, self._record, request)
        self._services.hedges.requested()
        deadline = started + self._services.settings.timeouts.first_token
        try:
            async with asyncio.timeout_at(deadline) as self._deadline:
                attempts.progressed, attempts.late = self._progressed, self._expired
                while True:
                    try:
                        attempt, part = await race(attempts, attempts.hedge_after())
                        return attempt, await attempts.carried(attempt, part, text_only)
                    except UpstreamError as exc:
                        delay = self._retry_delay(exc, deadline)
                    if not self._upstream.balancer.has_untried(attempts.tried):  # the same again
                        await asyncio.sleep(delay)
        except TimeoutError:
            raise self._timed_out() from None

    def _retry_delay(self, exc: UpstreamError, deadline: float) -> float:
        """The delay before the next attempt after this failure, or raise it."""
        delay = retry_delay(self._services.settings.retry, exc, self._record.attempts)
        if delay is None or asyncio.get_running_loop().time() + delay >= deadline:
            raise exc
        self._record.error = exc.message
        return delay

    def _timed_out(self) -> UpstreamTimeout:
        timeouts = self._services.settings.timeouts
        if self._record.first_part_at is None:
            return UpstreamTimeout(
                f"no first token from upstream within {timeouts.first_token:g} s"
            )
        return UpstreamTimeout(f"no text from upstream for {timeouts.idle:g} s")

    def _progressed(self) -> None:
        """A part arrived: the deadline is the idle timeout from now (not before the
        first-token deadline), within the total timeout."""
        record = self._record
        if record.first_part_at is None:
            record.first_part_at = time.monotonic()
        assert self._deadline is not None
        timeouts = self._services.settings.timeouts
        idle_due = asyncio.get_running_loop().time() + timeouts.idle
        first_token_due = self._began + timeouts.first_token
        self._deadline.reschedule(min(max(first_token_due, idle_due), self._began + timeouts.total))

    def _expired(self) -> bool:
        return self._deadline is not None and self._deadline.expired()


class Attempts:
    """One request's upstream attempts, as the race (proxy/hedge.py) and the relay use them:
    started on a replica, read to a first part, and ended, each end observed once."""

    __slots__ = (
        "_content",
        "_hedge",
        "_record",
        "_request",
        "_services",
        "_upstream",
        "late",
        "progressed",
        "tried",
    )

    def __init__(
        self, services: Services, upstream: Upstream, record: StreamRecord, request: UpstreamRequest
    ) -> None:
        self._services = services
        self._upstream = upstream
        self._record = record
        self._request = request
        self._content = orjson.dumps(request.json)
        self.tried: set[str] = set()
        self._hedge: UpstreamAttempt | None = None
        self.progressed: Callable[[], None] = lambda: None  # the deadline hears of every part
        self.late: Callable[[], bool] = lambda: False  # the deadline has passed

    def hedge_after(self) -> float | None:
        """Seconds before a hedge for this request's next race; None: none (the one hedge a
        request may have is spent, or the model does not hedge)."""
        if self._record.hedged or len(self._upstream.balancer.replicas) < 2:
            return None
        return self._upstream.first_parts.hedge_after(self._upstream.spec.hedge_after)

    def start(self, exclude: str | None = None) -> UpstreamAttempt:
        tried = self.tried if exclude is None else self.tried | {exclude}
        attempt = UpstreamAttempt(self._upstream, self._upstream.balancer.acquire(tried))
        self._record.attempts += 1
        self._record.upstream = attempt.replica.public.url
        return attempt

    def hedge(self, first: UpstreamAttempt) -> UpstreamAttempt | None:
        balancer = self._upstream.balancer
        if not balancer.has_untried(self.tried | {first.replica.url}):
            return None  # no other healthy replica: waiting on is all there is
        if not self._services.hedges.try_hedge():
            return None
        self._record.hedged = True
        self._hedge = self.start(exclude=first.replica.url)
        return self._hedge

    async def first_part(self, attempt: UpstreamAttempt) -> Part | None:
        """Send the request and read to the first part of any kind: what a race is won by."""
        services, request = self._services, self._request
        began = asyncio.get_running_loop().time()
        headers = services.observers.attempt_started(self._started(attempt))
        if headers:  # the trace context naming this attempt (observers/tracing.py)
            request = dataclasses.replace(request, headers={**request.headers, **headers})
        limits = services.settings.request_limits
        await attempt.send(services.http, request, self._content, limits.max_event_bytes)
        part = await attempt.read()
        if part is not None:
            self._upstream.first_parts.observe(asyncio.get_running_loop().time() - began)
            self.progressed()
        return part

    async def carried(
        self, attempt: UpstreamAttempt, part: Part | None, text_only: bool
    ) -> Part | None:
        """Read the race's winner on to the first part the format carries: the commit point."""
        self._record.hedge_won = attempt is self._hedge
        try:
            while part is not None and text_only and type(part) is not str:
                self._record.count(part)  # the upstream made it: counted, never written
                part = await attempt.read()
                if part is not None:
                    self.progressed()
        except UpstreamError as exc:
            await self.failed(attempt, exc)
            raise
        except BaseException:
            await self.dropped(attempt, "cancelled")
            raise
        self._ended(attempt, "ok")
        return part

    async def failed(self, attempt: UpstreamAttempt, error: UpstreamError) -> None:
        """Observe and let go of a failed attempt; rest its replica if the failure says so."""
        self._ended(attempt, attempt_result(error), error)
        await attempt.aclose()
        if replica_at_fault(error):
            self._upstream.balancer.failed(attempt.replica)
        self.tried.add(attempt.replica.url)

    async def dropped(self, attempt: UpstreamAttempt, result: AttemptResult) -> None:
        """Observe and close an attempt nobody waits for: a lost race, or a cancelled one."""
        self._ended(attempt, "timeout" if result == "cancelled" and self.late() else result)
        await attempt.aclose()

    def _started(self, attempt: UpstreamAttempt) -> AttemptStarted:
        spec, request = self._upstream.spec, self._request
        model = request.json.get("model") or spec.upstream_model or spec.name
        replica, dialect = attempt.replica.public, self._upstream.dialect.name
        return AttemptStarted(self._record, spec.name, dialect, model, replica, request.json)

    def _ended(
        self, attempt: UpstreamAttempt, result: AttemptResult, error: UpstreamError | None = None
    ) -> None:
        spec, replica = self._upstream.spec, attempt.replica.public
        record = AttemptRecord(spec.name, replica, result, self._record, error)
        self._services.observers.attempt_ended(record)
