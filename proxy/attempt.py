"""One upstream attempt: its replica, its response, the dialect's parser and the body.

    attempt = UpstreamAttempt(upstream, replica)
    await attempt.send(http, request, content, max_event_bytes)   # the head; non-200 raises
    while (part := await attempt.read()) is not None: ...          # the same loop before and
    await attempt.aclose()                                         # after the commit point

`read` raises the UpstreamError that cut the stream short, after the parts before it. Until
some part has come, a body that ends or drops is UpstreamClosedEarly (worth another attempt);
after, it is an UpstreamProtocolError. Deadlines and the client are the session's business.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import httpx

from proxy.balancer import Replica
from proxy.dialects import StreamParser, UpstreamRequest
from proxy.errors import (
    UpstreamClosedEarly,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from proxy.parts import Part
from proxy.settings import ModelSpec
from proxy.upstream import ResponseHeadTooLarge, UpstreamHTTP, response_body
from proxy.upstreams import Upstream
from proxy.values import NO_USAGE, Done, Usage

_MAX_ERROR_BODY = 16_384
_BEFORE_ANY = {
    "ended": "upstream ended the stream before any text",
    "dropped": "upstream connection dropped before any text",
}
_MID_STREAM = {
    "ended": "upstream ended the stream without its end marker",
    "dropped": "upstream connection dropped mid-stream",
}


class UpstreamAttempt:
    __slots__ = (
        "_body",
        "_closed",
        "_pending",
        "_queued",
        "_response",
        "_seen",
        "_upstream",
        "parser",
        "replica",
    )

    def __init__(self, upstream: Upstream, replica: Replica) -> None:
        self._upstream = upstream
        self.replica = replica
        self._response: httpx.Response | None = None
        self.parser: StreamParser | None = None
        self._body: AsyncIterator[bytes] | None = None  # None once the body has ended
        self._pending: UpstreamProtocolError | None = None  # cut the last parts short
        self._queued: list[Part] = []  # the rest of what the last read completed, reversed
        self._seen = False
        self._closed = False

    async def send(
        self, http: UpstreamHTTP, request: UpstreamRequest, content: bytes, max_event_bytes: int
    ) -> None:
        """Send the request and read the response's head; a non-200 answer raises."""
        response = self._response = await send_request(http, self.replica.url, request, content)
        if response.status_code != 200:
            raise await status_error(self._upstream, response)
        self.parser = self._upstream.dialect.parser(max_event_bytes)
        self._body = response_body(response)

    @property
    def complete(self) -> bool:
        """The dialect's end marker has arrived: the text is whole."""
        return self.parser is not None and self.parser.complete

    @property
    def usage(self) -> Usage:
        return self.parser.usage if self.parser is not None else NO_USAGE

    def ending(self) -> Done:
        """Why the upstream stopped and what it counted, where it said."""
        if self.parser is None:
            return Done()
        return Done.reported(self.parser.finish_reason, self.parser.usage)

    async def read(self) -> Part | None:
        """The next part; None once the body has ended whole."""
        if self._queued:
            return self._queued.pop()
        parser, body = self.parser, self._body
        assert parser is not None, "the attempt was not sent"
        if self._pending is not None:
            raise self._pending
        if body is None:
            if not parser.complete:
                raise self._cut_short("ended")
            return None
        while True:
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                self._body = None
                parts, self._pending = parser.close()
                if parts:
                    return self._first_of(parts)
                if self._pending is not None:
                    raise self._pending from None
                if not parser.complete:
                    raise self._cut_short("ended") from None
                return None
            except httpx.HTTPError:
                raise self._cut_short("dropped") from None
            parts, self._pending = parser.feed(chunk)
            if parts:
                return self._first_of(parts)
            if self._pending is not None:
                raise self._pending

    def _first_of(self, parts: list[Part]) -> Part:
        """The first of a read's parts; the rest wait in `_queued` (most reads have one)."""
        self._seen = True
        if len(parts) > 1:
            self._queued = parts[:0:-1]
        return parts[0]

    def _cut_short(self, how: str) -> UpstreamProtocolError:
        """The body ended `how` too soon: before any part, another attempt may do better."""
        if self._seen:
            return UpstreamProtocolError(_MID_STREAM[how])
        return UpstreamClosedEarly(_BEFORE_ANY[how])

    async def aclose(self) -> None:
        """Close the response and hand the replica back; only the first call does anything."""
        if self._closed:
            return
        self._closed = True
        response, self._response, self._body = self._response, None, None
        try:
            if response is not None:
                # UpstreamTransport's close never suspends: no cancellation can cut it short.
                await response.aclose()
        finally:
            self._upstream.balancer.release(self.replica)


async def send_request(
    http: UpstreamHTTP, url: str, request: UpstreamRequest, content: bytes
) -> httpx.Response:
    """The upstream's response, its body unread; a failure to reach it as a ProxyError."""
    headers = {"Content-Type": "application/json", **request.headers}
    try:
        return await http.send("POST", url + request.path, content, headers)
    except httpx.TimeoutException:
        raise UpstreamConnectTimeout("timed out connecting to upstream") from None
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
        # Never sent (a configured key with a stray space, say): no retry would help.
        raise UpstreamProtocolError(f"request not sent upstream: {exc}") from None
    except ResponseHeadTooLarge as exc:  # the next attempt would get the same head
        raise UpstreamProtocolError(str(exc)) from None
    except httpx.HTTPError:
        raise UpstreamUnavailable("could not connect to upstream") from None


async def status_error(upstream: Upstream, response: httpx.Response) -> UpstreamStatusError:
    """A non-200 answer as an error, with the upstream's message (its secret scrubbed)."""
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
