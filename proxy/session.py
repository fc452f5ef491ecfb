"""The owner of one stream: everything that lives exactly as long as it does.

    session = StreamSession(services, request_id, receive)  # nothing awaited yet
    async with session.opening():                           # a failure here ends the session
        await session.admit(client, peer)                   # the admission ticket, or 503 / 429
        session.name_model(name)                            # what a refusal from here on names
        await session.open(upstream, conversation, text_only)  # up to the commit point
    async for item in session: ...                          # its parts, then its Ending
    await session.aclose()                                  # on every path; observed once

A session is composed of parts that each own one thing: the admission ticket (proxy/admission/),
the relay that reaches the commit point under the retry policy (proxy/relay.py), the upstream
attempt that got there (proxy/attempt.py), the watchdog (client and upstream deadlines) and the
record its observers are handed, which the session alone writes (the ticket hands it values:
its budget's note, the x-ratelimit-* headers). The session counts what passes (proxy/parts.py)
and never looks inside a part otherwise. Before the commit point every failure is an ordinary HTTP
error; after it nothing is retried, and a failure is the stream's Ending: `Failed`, which raw
text turns into an abort (SPEC §1). A client that leaves raises ClientDisconnected: nobody
is told anything. `aclose` lets go of every part, however far the session got.

A class rather than an async generator: when a client leaves, nothing is left suspended for
the garbage collector to finalise (SPEC §7).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.types import Receive

from proxy.admission import AdmissionTicket
from proxy.attempt import UpstreamAttempt
from proxy.conversation import Conversation
from proxy.errors import ClientDisconnected, ProxyError, ShuttingDown, error_body
from proxy.parts import Part
from proxy.record import StreamRecord
from proxy.relay import Relay
from proxy.services import Services
from proxy.upstreams import Upstream
from proxy.values import Ending, Failed
from proxy.watchdog import Watchdog


class StreamSession:
    __slots__ = (
        "_attempt",
        "_closed",
        "_ended",
        "_first",
        "_receive",
        "_services",
        "_ticket",
        "_watchdog",
        "record",
        "request_id",
    )

    def __init__(self, services: Services, request_id: str, receive: Receive) -> None:
        self.request_id = request_id
        self.record = StreamRecord(request_id)
        self._services = services
        self._receive = receive
        self._ticket: AdmissionTicket | None = None
        self._watchdog: Watchdog | None = None
        self._attempt: UpstreamAttempt | None = None
        self._first: Part | None = None  # the part that reached the commit point
        self._ended = False
        self._closed = False

    def opening(self) -> AbstractAsyncContextManager[None]:
        """Before the commit point: a failure ends the session, observed once, with its id."""
        return _opening(self)

    async def refuse(self, failure: ProxyError) -> None:
        """The request ends with this error, answered before the commit point."""
        self.record.refused(failure)
        failure.request_id = self.request_id
        await self.aclose()

    def cancelled(self) -> ShuttingDown:
        # The watchdog claims its own interruptions: this is the shutdown grace running out.
        shutdown = ShuttingDown("the shutdown grace ran out")
        self.record.failed(shutdown)
        return shutdown

    async def admit(self, client: str | None, peer: str) -> None:
        """A slot under the proxy's cap and the client's limits (its budget in `open`)."""
        self.record.client = client
        self._ticket = await self._services.admission.admit(client, peer)

    def name_model(self, name: str) -> None:
        self.record.model = name  # what a refusal and the log line name

    @property
    def rate_limit_headers(self) -> tuple[tuple[str, str], ...]:
        """A budgeted key's x-ratelimit-* headers once its budget has reserved."""
        return () if self._ticket is None else self._ticket.headers

    def failed_whole(self, failure: ProxyError) -> None:
        """Collected into one answer, a failure after the commit point is an error status."""
        self.record.refused(failure)

    async def open(self, upstream: Upstream, conversation: Conversation, text_only: bool) -> None:
        """Reach the commit point (the first part the format carries: `text_only`, the first
        text; or a clean end); the client is watched."""
        timeouts = self._services.settings.timeouts
        self.record.model = upstream.spec.name
        if self._ticket is not None:  # a budgeted key's reservation caps its max tokens
            conversation = await self._ticket.reserve(upstream.spec, conversation)
            self.record.budget = self._ticket.budget  # a refusal's is written as it closes
        self.record.went_upstream = True
        self._services.observers.stream_started(self.record)
        watchdog = self._watchdog = Watchdog(self._receive)
        started = asyncio.get_running_loop().time()
        request = upstream.dialect.build_request(upstream.spec, conversation)
        relay = Relay(self._services, upstream, self.record)
        with watchdog.guarding():
            self._attempt, self._first = await relay.commit(request, started, text_only)
        self.record.first_delta_at = time.monotonic()
        self.record.error = None  # an earlier attempt's failure was overcome
        watchdog.limit_upstream(timeouts.idle, started + timeouts.total)

    def outlive_client(self) -> None:
        """Go on to the end when the client leaves: a resumable stream (issue 13)."""
        if self._watchdog is not None:
            self._watchdog.forget_client()

    def __aiter__(self) -> StreamSession:
        return self

    async def __anext__(self) -> Part | Ending:
        """The next part; then the Ending, once; ClientDisconnected if the client left."""
        part, self._first = self._first, None
        if part is None and not self._ended:
            try:
                part = await self._read()
            except ProxyError as exc:
                return self._end(exc)
        if part is None:
            if self._ended:
                raise StopAsyncIteration
            return self._end(None)
        record, ticket = self.record, self._ticket
        record.count(part)
        if ticket is not None:  # the part past a budget's allowance is not sent
            over = ticket.past_allowance(record.output_bytes, record.output_deltas)
            if over is not None:
                return self._end(over)
        return part

    async def _read(self) -> Part | None:
        attempt, watchdog = self._attempt, self._watchdog
        assert attempt is not None and watchdog is not None, "the session is not open"  # noqa: PT018
        watchdog.waiting_for_upstream()
        try:
            return await attempt.read()
        except asyncio.CancelledError as cancelled:
            raise watchdog.explain(cancelled) from None
        finally:
            watchdog.got_upstream()

    def _end(self, failure: ProxyError | None) -> Ending:
        self._ended, attempt = True, self._attempt
        assert attempt is not None
        if failure is None or attempt.complete:  # the text was whole; a dirty close is free
            self.record.outcome = "completed"
            return attempt.ending()
        self.record.failed(failure)
        if isinstance(failure, ClientDisconnected):
            raise failure
        return Failed(error_body(failure, self.request_id))

    async def aclose(self) -> None:
        """Let go of every part, then hand the final record to the observers, once."""
        if self._closed:
            return
        self._closed = True
        attempt, ticket, watchdog = self._attempt, self._ticket, self._watchdog
        try:
            if attempt is not None:
                self.record.reported(attempt.ending())
                await attempt.aclose()
            if watchdog is not None:
                watchdog.close()
            if ticket is not None:
                await ticket.release(self.record.usage, self.record.output_bytes)
                self.record.budget = ticket.budget
        finally:
            self.record.finish()
            self._services.observers.stream_ended(self.record)


@asynccontextmanager
async def _opening(session: StreamSession) -> AsyncIterator[None]:
    try:
        yield
    except asyncio.CancelledError:
        # The shutdown grace ran out before the commit point: a 503 with this request's id.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        shutdown = session.cancelled()
        await session.refuse(shutdown)
        raise shutdown from None
    except ProxyError as exc:
        await session.refuse(exc)
        raise
    except BaseException:
        await session.aclose()
        raise
