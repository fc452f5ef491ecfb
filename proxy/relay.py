"""Reaching the commit point (SPEC §1, §5g): attempts one after another on a model's replicas,
under the retry policy (proxy/retry.py), until one has the first part the response's format
carries, or the deadline passes. Every attempt's end is observed; a failed one is closed
before the next.

The deadline is the first-token deadline, pushed back by the idle timeout each time a part
arrives that the format does not carry (a thinking model's reasoning before a raw-text
answer): the upstream is making progress, as the idle deadline counts it after the commit
point, so a long thought is not cut off while it streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import orjson

from proxy.attempt import UpstreamAttempt
from proxy.dialects import UpstreamRequest
from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.parts import Part
from proxy.record import AttemptRecord, AttemptResult, AttemptStarted, StreamRecord, attempt_result
from proxy.retry import replica_at_fault, retry_delay
from proxy.services import Services
from proxy.upstreams import Upstream


class Relay:
    __slots__ = ("_began", "_deadline", "_record", "_services", "_tried", "_upstream")

    def __init__(self, services: Services, upstream: Upstream, record: StreamRecord) -> None:
        self._services = services
        self._upstream = upstream
        self._record = record
        self._tried: set[str] = set()
        self._began = 0.0
        self._deadline: asyncio.Timeout | None = None

    async def commit(
        self, request: UpstreamRequest, started: float, text_only: bool
    ) -> tuple[UpstreamAttempt, Part | None]:
        """The attempt that reached the commit point, and its first part the format carries
        (text alone, or any part); None: the body ended whole without one."""
        content = orjson.dumps(request.json)
        self._began = started
        deadline = started + self._services.settings.timeouts.first_token
        try:
            async with asyncio.timeout_at(deadline) as self._deadline:
                while True:
                    attempt = self._next_attempt()
                    try:
                        part = await self._first_part(attempt, request, content, text_only)
                    except UpstreamError as exc:
                        self._ended(attempt, attempt_result(exc), exc)
                        delay = await self._after_failure(attempt, exc, deadline)
                    except BaseException:
                        # Cancelled: by the deadline, or the client leaving.
                        late = self._deadline.expired()
                        self._ended(attempt, "timeout" if late else "cancelled")
                        await attempt.aclose()
                        raise
                    else:
                        self._ended(attempt, "ok")
                        return attempt, part
                    if not self._upstream.balancer.has_untried(self._tried):  # the same again
                        await asyncio.sleep(delay)
        except TimeoutError:
            raise self._timed_out() from None

    def _timed_out(self) -> UpstreamTimeout:
        timeouts = self._services.settings.timeouts
        if self._record.first_part_at is None:
            return UpstreamTimeout(
                f"no first token from upstream within {timeouts.first_token:g} s"
            )
        return UpstreamTimeout(f"no text from upstream for {timeouts.idle:g} s")

    def _next_attempt(self) -> UpstreamAttempt:
        attempt = UpstreamAttempt(self._upstream, self._upstream.balancer.acquire(self._tried))
        self._record.attempts += 1
        self._record.upstream = attempt.replica.public.url
        return attempt

    async def _first_part(
        self, attempt: UpstreamAttempt, request: UpstreamRequest, content: bytes, text_only: bool
    ) -> Part | None:
        services = self._services
        max_event_bytes = services.settings.request_limits.max_event_bytes
        headers = services.observers.attempt_started(self._started(attempt, request))
        if headers:  # the trace context naming this attempt (observers/tracing.py)
            request = dataclasses.replace(request, headers={**request.headers, **headers})
        await attempt.send(services.http, request, content, max_event_bytes)
        while True:
            part = await attempt.read()
            if part is None:
                return None
            self._progressed()
            if not text_only or type(part) is str:
                return part  # counted as it leaves the session
            self._record.count(part)

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

    def _started(self, attempt: UpstreamAttempt, request: UpstreamRequest) -> AttemptStarted:
        spec = self._upstream.spec
        model = request.json.get("model") or spec.upstream_model or spec.name
        replica, dialect = attempt.replica.public, self._upstream.dialect.name
        return AttemptStarted(self._record, spec.name, dialect, model, replica, request.json)

    def _ended(
        self, attempt: UpstreamAttempt, result: AttemptResult, error: UpstreamError | None = None
    ) -> None:
        spec, replica = self._upstream.spec, attempt.replica.public
        record = AttemptRecord(spec.name, replica, result, self._record, error)
        self._services.observers.attempt_ended(record)

    async def _after_failure(
        self, attempt: UpstreamAttempt, exc: UpstreamError, deadline: float
    ) -> float:
        """Let go of the failed attempt; the delay before the next, or raise `exc`."""
        await attempt.aclose()
        replica = attempt.replica
        if replica_at_fault(exc):
            self._upstream.balancer.failed(replica)
        self._tried.add(replica.url)
        delay = retry_delay(self._services.settings.retry, exc, self._record.attempts)
        if delay is None or asyncio.get_running_loop().time() + delay >= deadline:
            raise exc
        self._record.error = exc.message
        return delay
