"""Reaching the commit point (SPEC §1): attempts one after another on a model's replicas,
under the retry policy (proxy/retry.py), until one has its first text or the first-token
deadline passes. Every attempt's end is observed; a failed one is closed before the next.
"""

from __future__ import annotations

import asyncio
import dataclasses

import orjson

from proxy.attempt import UpstreamAttempt
from proxy.dialects import UpstreamRequest
from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.record import AttemptRecord, AttemptResult, AttemptStarted, StreamRecord, attempt_result
from proxy.retry import replica_at_fault, retry_delay
from proxy.services import Services, Upstream


class Relay:
    __slots__ = ("_record", "_services", "_tried", "_upstream")

    def __init__(self, services: Services, upstream: Upstream, record: StreamRecord) -> None:
        self._services = services
        self._upstream = upstream
        self._record = record
        self._tried: set[str] = set()

    async def commit(
        self, request: UpstreamRequest, deadline: float
    ) -> tuple[UpstreamAttempt, str | None]:
        """The attempt that reached the commit point, and its first text (None: the body
        ended whole without any)."""
        content = orjson.dumps(request.json)
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    attempt = self._next_attempt()
                    try:
                        text = await self._first_text(attempt, request, content)
                    except UpstreamError as exc:
                        self._ended(attempt, attempt_result(exc), exc)
                        delay = await self._after_failure(attempt, exc, deadline)
                    except BaseException:
                        # Cancelled: by the first-token deadline, or the client leaving.
                        late = asyncio.get_running_loop().time() >= deadline
                        self._ended(attempt, "timeout" if late else "cancelled")
                        await attempt.aclose()
                        raise
                    else:
                        self._ended(attempt, "ok")
                        return attempt, text
                    if not self._upstream.balancer.has_untried(self._tried):  # the same again
                        await asyncio.sleep(delay)
        except TimeoutError:
            timeout = self._services.settings.timeouts.first_token
            raise UpstreamTimeout(f"no first token from upstream within {timeout:g} s") from None

    def _next_attempt(self) -> UpstreamAttempt:
        attempt = UpstreamAttempt(self._upstream, self._upstream.balancer.acquire(self._tried))
        self._record.attempts += 1
        self._record.upstream = attempt.replica.public.url
        return attempt

    async def _first_text(
        self, attempt: UpstreamAttempt, request: UpstreamRequest, content: bytes
    ) -> str | None:
        services = self._services
        max_event_bytes = services.settings.request_limits.max_event_bytes
        headers = services.observers.attempt_started(self._started(attempt, request))
        if headers:  # the trace context naming this attempt (observers/tracing.py)
            request = dataclasses.replace(request, headers={**request.headers, **headers})
        await attempt.send(services.http, request, content, max_event_bytes)
        return await attempt.read()

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
