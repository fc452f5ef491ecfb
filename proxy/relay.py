"""The core: one client stream relayed from one upstream response.

Before the commit point (the first text delta) every failure is an ordinary HTTP error and
may be retried; after it nothing is retried and a failure aborts the response. Timeouts,
retries, the commit point and cleanup live here once, for every dialect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import orjson

from proxy.balancer import Balancer, Replica
from proxy.conversation import Conversation
from proxy.dialects import Dialect, StreamParser, TokenUsage, UpstreamRequest
from proxy.errors import (
    ClientDisconnected,
    ProxyError,
    ShuttingDown,
    UpstreamClosedEarly,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.metrics import AttemptResult, Metrics, attempt_result
from proxy.settings import ModelSpec, Settings
from proxy.upstream_http import UpstreamHTTP, response_body
from proxy.watchdog import Watchdog

logger = logging.getLogger("proxy.stream")

Outcome = Literal[
    "completed", "client_disconnected", "upstream_error", "timeout", "rejected", "shutdown"
]

_MAX_ERROR_BODY = 16_384


@dataclass(slots=True, frozen=True)
class Upstream:
    """A model ready to serve: its spec, its adapter and the base URLs to reach it."""

    spec: ModelSpec
    dialect: Dialect
    balancer: Balancer


@dataclass(slots=True, frozen=True)
class OpenedStream:
    """An upstream response past the commit point, and the replica serving it."""

    response: httpx.Response
    stream: TextStream
    replica: Replica


@dataclass(slots=True)
class StreamRecord:
    """What the one log line of a stream says."""

    request_id: str
    model: str
    client: str | None = None
    started: float = field(default_factory=time.monotonic)
    upstream: str | None = None
    attempts: int = 0
    status: int = 200
    outcome: Outcome | None = None
    error: str | None = None
    first_delta_at: float | None = None
    deltas: int = 0
    bytes: int = 0
    # As the upstream reported them (None: it did not say).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def emit(self) -> None:
        outcome = self.outcome or "client_disconnected"
        level = logging.INFO if outcome in ("completed", "client_disconnected") else logging.WARNING
        if not logger.isEnabledFor(level):
            return
        now = time.monotonic()
        fields = {
            "request_id": self.request_id,
            "model": self.model,
            "client": self.client,
            "upstream": self.upstream,
            "status": self.status,
            "outcome": outcome,
            "attempts": self.attempts,
            "ttfb_ms": _ms(self.first_delta_at - self.started) if self.first_delta_at else None,
            "duration_ms": _ms(now - self.started),
            "deltas": self.deltas,
            "bytes": self.bytes,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.error:
            fields["error"] = self.error
        logger.log(level, "stream", extra={"fields": fields})


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def outcome_of(exc: ProxyError) -> Outcome:
    if isinstance(exc, ClientDisconnected):
        return "client_disconnected"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, ShuttingDown):
        return "shutdown"
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    return "rejected"


class TextStream:
    """The upstream's text from the commit point on, as UTF-8 chunks.

    A class rather than an async generator: when a client leaves, nothing here is left
    suspended for the garbage collector to finalise; the relay closes the response.
    """

    __slots__ = ("_chunks", "_ended", "_failure", "_first", "_parser", "_record", "_watchdog")

    def __init__(
        self,
        first: str,
        chunks: AsyncIterator[bytes] | None,
        parser: StreamParser,
        record: StreamRecord,
        watchdog: Watchdog,
        failure: UpstreamProtocolError | None = None,
    ) -> None:
        self._first = first.encode() if first else None
        self._failure = failure
        self._chunks = chunks
        self._parser = parser
        self._record = record
        self._watchdog = watchdog
        self._ended = chunks is None

    def __aiter__(self) -> TextStream:
        return self

    @property
    def usage(self) -> TokenUsage:
        return self._parser.usage

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        while not self._ended:
            try:
                text = await self._next_text()
            except ProxyError as exc:
                if self._parser.complete:  # the text was whole; a dirty close costs nothing
                    break
                self._record.outcome = outcome_of(exc)
                self._record.error = exc.message
                self._ended = True
                raise
            if text:
                data = text.encode()
                self._record.deltas += 1
                self._record.bytes += len(data)
                return data
        self._ended = True
        self._record.outcome = "completed"
        raise StopAsyncIteration

    async def _next_text(self) -> str | None:
        """The text of the next read that has any; None at a clean end of the stream."""
        assert self._chunks is not None
        if self._failure is not None:
            raise self._failure
        watchdog = self._watchdog
        watchdog.waiting_for_upstream()
        try:
            while True:
                try:
                    chunk = await anext(self._chunks)
                except StopAsyncIteration:
                    text = self._parser.close()
                    if not self._parser.complete:
                        raise UpstreamProtocolError(
                            "upstream ended the stream without its end marker"
                        ) from None
                    self._ended = True
                    return text
                except httpx.HTTPError:
                    raise UpstreamProtocolError("upstream connection dropped mid-stream") from None
                except asyncio.CancelledError:
                    failure = watchdog.claim()
                    if failure is None:
                        raise
                    raise failure from None
                text, self._failure = feed(self._parser, chunk)
                if text:
                    return text
        finally:
            watchdog.got_upstream()


class Relay:
    def __init__(self, http: UpstreamHTTP, settings: Settings, metrics: Metrics) -> None:
        self._http = http
        self._settings = settings
        self._metrics = metrics

    async def reachable(self, upstream: Upstream) -> bool:
        """Whether a healthy replica answers HTTP at all (any status will do)."""
        for url in upstream.balancer.healthy_urls():
            try:
                response = await self._http.send(
                    "GET", url + "/", timeout=min(self._settings.connect_timeout, 2)
                )
            except httpx.HTTPError:
                continue
            await response.aclose()
            return True
        return False

    @asynccontextmanager
    async def open(
        self,
        upstream: Upstream,
        conversation: Conversation,
        request_id: str,
        watchdog: Watchdog,
        client: str | None = None,
    ) -> AsyncIterator[TextStream]:
        """Reach the commit point, then yield the stream; close the upstream on every exit."""
        record = StreamRecord(request_id=request_id, model=upstream.spec.name, client=client)
        opened: OpenedStream | None = None
        self._metrics.stream_started(record.model)
        try:
            with watchdog.guarding():
                opened = await self._attempts(upstream, conversation, record, watchdog)
            yield opened.stream
        except ProxyError as exc:
            if record.outcome is None:
                record.outcome = outcome_of(exc)
                record.status = exc.status_code
                record.error = exc.message
            raise
        except asyncio.CancelledError:
            # The watchdog claims its own interruptions: any other cancellation is the server
            # ending the request because its shutdown grace ran out (proxy/drain.py).
            if record.outcome is None:
                shutdown = ShuttingDown("the shutdown grace ran out")
                record.outcome = outcome_of(shutdown)
                record.error = shutdown.message
                if opened is None:
                    record.status = shutdown.status_code
            raise
        finally:
            if opened is not None:
                await close_response(opened.response)
                self._release(upstream, opened.replica)
                usage = opened.stream.usage
                record.prompt_tokens, record.completion_tokens = usage.prompt, usage.completion
            record.emit()
            self._metrics.stream_ended(record)

    async def _attempts(
        self,
        upstream: Upstream,
        conversation: Conversation,
        record: StreamRecord,
        watchdog: Watchdog,
    ) -> OpenedStream:
        settings = self._settings
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_token_deadline = started + settings.first_token_timeout
        request = upstream.dialect.build_request(upstream.spec, conversation)
        content = orjson.dumps(request.json)
        balancer = upstream.balancer
        tried: set[str] = set()
        try:
            async with asyncio.timeout_at(first_token_deadline):
                while True:
                    replica = balancer.acquire(tried)
                    record.attempts += 1
                    record.upstream = loggable_url(replica.url)
                    try:
                        response, first, chunks, parser, failure = await self._attempt(
                            upstream, replica.url, request, content
                        )
                        self._metrics.attempt(record.model, replica.url, "ok")
                        break
                    except UpstreamError as exc:
                        self._metrics.attempt(record.model, replica.url, attempt_result(exc))
                        self._release(upstream, replica)
                        if replica_at_fault(exc):
                            balancer.failed(replica)
                        tried.add(replica.url)
                        delay = self._retry_delay(exc, record.attempts)
                        if delay is None or loop.time() + delay >= first_token_deadline:
                            raise
                        record.error = exc.message
                        if not balancer.has_untried(tried):  # same replica again: back off
                            await asyncio.sleep(delay)
                    except BaseException:
                        # Cancelled: by the first-token deadline, or the client leaving.
                        timed_out = loop.time() >= first_token_deadline
                        result: AttemptResult = "timeout" if timed_out else "cancelled"
                        self._metrics.attempt(record.model, replica.url, result)
                        self._release(upstream, replica)
                        raise
        except TimeoutError:
            raise UpstreamTimeout(
                f"no first token from upstream within {settings.first_token_timeout:g} s"
            ) from None
        record.first_delta_at = time.monotonic()
        record.error = None
        if first:
            record.deltas = 1
            record.bytes = len(first.encode())
        watchdog.limit_upstream(settings.idle_timeout, started + settings.total_timeout)
        stream = TextStream(first, chunks, parser, record, watchdog, failure)
        return OpenedStream(response, stream, replica)

    def _retry_delay(self, exc: UpstreamError, attempts: int) -> float | None:
        if not exc.retryable or attempts > self._settings.retries:
            return None
        backoff = self._settings.retry_backoff * 2.0 ** (attempts - 1) * random.uniform(0.5, 1.5)
        if exc.retry_after is not None:
            return max(backoff, min(exc.retry_after, self._settings.max_retry_after))
        return backoff

    def _release(self, upstream: Upstream, replica: Replica) -> None:
        """An attempt or a stream is over: its replica is free."""
        upstream.balancer.release(replica)

    async def _attempt(
        self,
        upstream: Upstream,
        url: str,
        request: UpstreamRequest,
        content: bytes,
    ) -> tuple[
        httpx.Response,
        str,
        AsyncIterator[bytes] | None,
        StreamParser,
        UpstreamProtocolError | None,
    ]:
        headers = {"Content-Type": "application/json", **request.headers}
        try:
            response = await self._http.send("POST", url + request.path, content, headers)
        except httpx.TimeoutException:
            raise UpstreamConnectTimeout("timed out connecting to upstream") from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            # Never sent (a configured key with a stray space, say): no retry would help.
            raise UpstreamProtocolError(f"request not sent upstream: {exc}") from None
        except httpx.HTTPError:
            raise UpstreamUnavailable("could not connect to upstream") from None
        try:
            if response.status_code != 200:
                raise await self._status_error(upstream, response)
            parser = upstream.dialect.parser(self._settings.max_event_bytes)
            chunks = response_body(response)
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    text = parser.close()
                    if text or parser.complete:
                        return response, text, None, parser, None
                    raise UpstreamClosedEarly("upstream ended the stream before any text") from None
                except httpx.HTTPError:
                    raise UpstreamClosedEarly(
                        "upstream connection dropped before any text"
                    ) from None
                text, failure = feed(parser, chunk)
                if text:
                    return response, text, chunks, parser, failure
        except BaseException:
            await close_response(response)
            raise

    async def _status_error(
        self, upstream: Upstream, response: httpx.Response
    ) -> UpstreamStatusError:
        body = b""
        try:
            async for chunk in response_body(response):
                body += chunk
                if len(body) >= _MAX_ERROR_BODY:
                    break
        except (httpx.HTTPError, UpstreamProtocolError):
            pass
        message = _redact(upstream.dialect.error_message(body), upstream.spec)
        detail = f"upstream answered {response.status_code}"
        return UpstreamStatusError(
            f"{detail}: {message}" if message else detail,
            upstream_status=response.status_code,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )


def feed(parser: StreamParser, chunk: bytes) -> tuple[str, UpstreamProtocolError | None]:
    """A read's text, and the failure that cut it short when some text came before it."""
    try:
        return parser.feed(chunk), None
    except UpstreamProtocolError as failure:
        if failure.text:
            return failure.text, failure
        raise


def replica_at_fault(exc: UpstreamError) -> bool:
    """Whether a failure says the replica is unwell (rest it) rather than the request."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500
    return isinstance(exc, UpstreamUnavailable | UpstreamConnectTimeout | UpstreamClosedEarly)


@functools.lru_cache(maxsize=256)
def loggable_url(url: str) -> str:
    """The URL without user info or query, where credentials hide."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path.rstrip('/')}"


async def close_response(response: httpx.Response) -> None:
    """Release the upstream connection (UpstreamTransport's close never suspends, so no
    cancellation can cut it short)."""
    await response.aclose()


def _redact(message: str, spec: ModelSpec) -> str:
    if spec.api_key is not None:
        secret = spec.api_key.get_secret_value()
        if secret:
            message = message.replace(secret, "**********")
    return message


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
