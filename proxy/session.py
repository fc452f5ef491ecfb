"""The owner of one stream: everything that lives exactly as long as it does.

    session = StreamSession(services, request_id, receive)  # nothing awaited yet
    async with session.opening():                           # a failure here ends the session
        await session.admit(client, peer)                   # the slots, or 503 / 429
        await session.open(upstream, conversation)          # attempts, up to the commit point
    async for chunk in session: ...                         # the text, as UTF-8 (responses.py)
    await session.aclose()                                  # on every path; the one log line

Before the commit point (the first text delta) every failure is an ordinary HTTP error and
may be retried on another replica; after it nothing is retried, and a failure ends the
iteration with the ProxyError that the response turns into an abort (SPEC §1). `aclose`
closes the upstream response, frees the replica, stops the watchdog, frees the slots and
finishes the record, however far the session got, so no caller has to know.

A class rather than an async generator: when a client leaves, nothing is left suspended for
the garbage collector to finalise (SPEC §7); the response's `finally` closes the session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager

import httpx
import orjson
from starlette.types import Receive

from proxy.balancer import Replica
from proxy.conversation import Conversation
from proxy.dialects import StreamParser, UpstreamRequest
from proxy.errors import (
    ProxyError,
    ShuttingDown,
    UpstreamClosedEarly,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from proxy.formats import Done, upstream_ending
from proxy.metrics import AttemptResult, attempt_result
from proxy.record import StreamRecord
from proxy.relay import loggable_url, replica_at_fault, retry_delay, send_request, status_error
from proxy.services import Services, Upstream
from proxy.upstream import response_body
from proxy.watchdog import Watchdog


class StreamSession:
    __slots__ = (
        "_chunks",
        "_client_slot",
        "_closed",
        "_done",
        "_first",
        "_holds_slot",
        "_parser",
        "_pending",
        "_receive",
        "_replica",
        "_response",
        "_services",
        "_upstream",
        "_watchdog",
        "record",
        "request_id",
    )

    def __init__(self, services: Services, request_id: str, receive: Receive) -> None:
        self.request_id = request_id
        self.record = StreamRecord(request_id)
        self._services = services
        self._receive = receive
        self._holds_slot = False
        self._client_slot: str | None = None  # who holds a per-client slot, if anyone
        self._watchdog: Watchdog | None = None
        self._upstream: Upstream | None = None
        self._replica: Replica | None = None
        self._response: httpx.Response | None = None
        self._parser: StreamParser | None = None
        self._chunks: AsyncIterator[bytes] | None = None  # None once the body has ended
        self._first: bytes | None = None  # the text that reached the commit point
        self._pending: UpstreamProtocolError | None = None  # cut the last text short
        self._done = False
        self._closed = False

    # --- up to the commit point ----------------------------------------------------------

    @asynccontextmanager
    async def opening(self) -> AsyncIterator[None]:
        """The steps before the commit point: a failure in any of them (the caller's too)
        ends the session here, logged once, and goes on to the error handler with this
        request's id."""
        try:
            yield
        except asyncio.CancelledError:
            # Not the watchdog's (it claims its own): the server's shutdown grace ran out
            # before the commit point, so the client gets a 503 with this request's id.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            shutdown = self._shutdown()
            await self._fail_before_commit(shutdown)
            raise shutdown from None
        except BaseException as exc:
            if isinstance(exc, ProxyError):
                await self._fail_before_commit(exc)
            else:
                await self.aclose()
            raise

    async def _fail_before_commit(self, failure: ProxyError) -> None:
        self.record.status = failure.status_code
        self.record.failed(failure)
        failure.request_id = self.request_id
        self._services.metrics.rejected(failure)
        await self.aclose()

    def cancelled(self) -> None:
        """The request's task was cancelled past the commit point: note why."""
        self._shutdown()

    def _shutdown(self) -> ShuttingDown:
        # The watchdog claims its own interruptions: any other cancellation is the server
        # ending the request because its shutdown grace ran out (proxy/drain.py).
        shutdown = ShuttingDown("the shutdown grace ran out")
        self.record.failed(shutdown)
        return shutdown

    async def admit(self, client: str | None, peer: str) -> None:
        """A slot under the proxy's cap and the client's limits, held until `aclose`."""
        self.record.client = client
        guards = self._services.guards
        guards.slots.acquire()
        self._holds_slot = True
        if guards.limited:
            identity = client or f"ip:{peer}"
            if await guards.client_limits.admit(identity):
                self._client_slot = identity

    async def open(self, upstream: Upstream, conversation: Conversation) -> None:
        """Reach the commit point: the first text, or the upstream's clean end without any.

        The client is watched from here on (the body is read, so `receive` carries nothing
        but the disconnect): leaving raises ClientDisconnected.
        """
        settings = self._services.settings
        self._upstream = upstream
        self.record.model = upstream.spec.name
        self._services.metrics.stream_started(upstream.spec.name)
        watchdog = self._watchdog = Watchdog(self._receive)
        started = asyncio.get_running_loop().time()
        with watchdog.guarding():
            await self._attempt_until_first_text(
                upstream,
                upstream.dialect.build_request(upstream.spec, conversation),
                started + settings.first_token_timeout,
            )
        self.record.first_delta_at = time.monotonic()
        self.record.error = None  # an earlier attempt's failure was overcome
        watchdog.limit_upstream(settings.idle_timeout, started + settings.total_timeout)

    async def _attempt_until_first_text(
        self, upstream: Upstream, request: UpstreamRequest, deadline: float
    ) -> None:
        content = orjson.dumps(request.json)
        tried: set[str] = set()
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    try:
                        await self._attempt(upstream, request, content, tried)
                    except UpstreamError as exc:
                        self._attempt_ended(upstream, attempt_result(exc))
                        delay = await self._end_failed_attempt(upstream, exc, tried, deadline)
                    except BaseException:
                        # Cancelled: by the first-token deadline, or the client leaving.
                        late = asyncio.get_running_loop().time() >= deadline
                        self._attempt_ended(upstream, "timeout" if late else "cancelled")
                        raise
                    else:
                        self._attempt_ended(upstream, "ok")
                        return
                    if not upstream.balancer.has_untried(tried):  # the same one again
                        await asyncio.sleep(delay)
        except TimeoutError:
            timeout = self._services.settings.first_token_timeout
            raise UpstreamTimeout(f"no first token from upstream within {timeout:g} s") from None

    async def _attempt(
        self, upstream: Upstream, request: UpstreamRequest, content: bytes, tried: set[str]
    ) -> None:
        replica = self._replica = upstream.balancer.acquire(tried)
        self.record.attempts += 1
        self.record.upstream = loggable_url(replica.url)
        response = await send_request(self._services.http, replica.url, request, content)
        self._response = response
        if response.status_code != 200:
            raise await status_error(upstream, response)
        parser = self._parser = upstream.dialect.parser(self._services.settings.max_event_bytes)
        chunks = self._chunks = response_body(response)
        await self._receive_first_text(parser, chunks)

    async def _receive_first_text(self, parser: StreamParser, chunks: AsyncIterator[bytes]) -> None:
        """Read until the first text, or the body's end: either is the commit point."""
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                self._chunks = None
                text, failure = parser.close()
                if not (text or failure or parser.complete):
                    raise UpstreamClosedEarly("upstream ended the stream before any text") from None
                break
            except httpx.HTTPError:
                raise UpstreamClosedEarly("upstream connection dropped before any text") from None
            text, failure = parser.feed(chunk)
            if text or failure:
                break
        if failure is not None and not text:
            raise failure
        self._commit(text, failure)

    def _commit(self, text: str, failure: UpstreamProtocolError | None) -> None:
        # Text before a failure is still text: the client gets it, then the abort.
        self._pending = failure
        if text:
            self._first = text.encode()
            self.record.deltas = 1
            self.record.bytes = len(self._first)

    def _attempt_ended(self, upstream: Upstream, result: AttemptResult) -> None:
        if self._replica is not None:
            self._services.metrics.attempt(upstream.spec.name, self._replica.url, result)

    async def _end_failed_attempt(
        self, upstream: Upstream, exc: UpstreamError, tried: set[str], deadline: float
    ) -> float:
        """Let go of the failed attempt; the delay before the next, or raise `exc`."""
        replica = self._replica
        assert replica is not None
        await self._release_upstream()
        if replica_at_fault(exc):
            upstream.balancer.failed(replica)
        tried.add(replica.url)
        delay = retry_delay(self._services.settings, exc, self.record.attempts)
        if delay is None or asyncio.get_running_loop().time() + delay >= deadline:
            raise exc
        self.record.error = exc.message
        return delay

    # --- after the commit point ----------------------------------------------------------

    def watching_client(self) -> AbstractContextManager[None]:
        """A region (the response's writes) that the client leaving interrupts with
        ClientDisconnected."""
        assert self._watchdog is not None, "the session is not open"
        return self._watchdog.guarding()

    def outlive_client(self) -> None:
        """Go on to the end when the client leaves: a resumable stream (issue 13)."""
        assert self._watchdog is not None, "the session is not open"
        self._watchdog.forget_client()

    def ending(self) -> Done:
        """How the upstream said the text ended, once it has ended whole."""
        return upstream_ending(self._parser)

    def __aiter__(self) -> StreamSession:
        return self

    async def __anext__(self) -> bytes:
        """The next text as UTF-8; a ProxyError when the stream fails (nothing after it)."""
        first = self._first
        if first is not None:
            self._first = None
            return first
        while not self._done:
            try:
                text = await self._receive_text()
            except ProxyError as exc:
                assert self._parser is not None
                if self._parser.complete:  # the text was whole; a dirty close costs nothing
                    break
                self._done = True
                self.record.failed(exc)
                raise
            if text is None:
                break
            if text:
                data = text.encode()
                self.record.deltas += 1
                self.record.bytes += len(data)
                return data
        if not self._done:
            self._done = True
            self.record.outcome = "completed"
        raise StopAsyncIteration

    async def _receive_text(self) -> str | None:
        """The text of the next read that has any; None once the body has ended whole."""
        parser, chunks, watchdog = self._parser, self._chunks, self._watchdog
        assert parser is not None
        assert watchdog is not None
        if self._pending is not None:
            raise self._pending
        if chunks is None:
            if not parser.complete:
                raise UpstreamProtocolError("upstream ended the stream without its end marker")
            return None
        watchdog.waiting_for_upstream()
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    self._chunks = None
                    text, self._pending = parser.close()
                    return text
                except httpx.HTTPError:
                    raise UpstreamProtocolError("upstream connection dropped mid-stream") from None
                except asyncio.CancelledError as cancelled:
                    raise watchdog.explain(cancelled) from None
                text, self._pending = parser.feed(chunk)
                if text:
                    return text
                if self._pending is not None:
                    raise self._pending
        finally:
            watchdog.got_upstream()

    # --- the end, on every path ----------------------------------------------------------

    async def aclose(self) -> None:
        """Close and free everything the session holds, then finish its record; only the
        first call does anything."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._release_upstream()
            if self._watchdog is not None:
                self._watchdog.close()
            await self._release_slots()
        finally:
            # The one place every /v1/stream request ends, refusals included: the record is
            # final here, so whatever else observes streams belongs next to this line.
            if self._parser is not None:
                self.record.count_tokens(self._parser.usage)
            self.record.finish()
            self._services.metrics.stream_ended(self.record, started=self._upstream is not None)

    async def _release_upstream(self) -> None:
        response, self._response = self._response, None
        replica, self._replica = self._replica, None
        self._chunks = None
        try:
            if response is not None:
                # UpstreamTransport's close never suspends: no cancellation can cut it short.
                await response.aclose()
        finally:
            if replica is not None and self._upstream is not None:
                self._upstream.balancer.release(replica)

    async def _release_slots(self) -> None:
        guards = self._services.guards
        if self._holds_slot:
            self._holds_slot = False
            guards.slots.release()
        identity, self._client_slot = self._client_slot, None
        if identity is not None:
            await guards.client_limits.release(identity)
