"""One upstream socket: an asyncio protocol carrying one request at a time, its answers
parsed by httptools.

A connection's life is its `ConnectionState`, as httpcore's HTTP/1.1 connection has one:
NEW (connected) -> ACTIVE (a request out) -> IDLE (its answer whole and the upstream willing)
-> ACTIVE ... -> CLOSED, by either side and for good. Only the connection moves it; the pool
asks (`is_available`, `has_expired`, `is_idle_and_silent`) and tells (`close`).

Responses
- framed by Content-Length, chunked encoding or the end of the connection, after any 1xx
  interim answers;
- a head (status line and headers, 1xx interim heads counted in) of at most
  MAX_RESPONSE_HEAD bytes, as h11's default: past it, ResponseHeadTooLarge (an
  httpx.RemoteProtocolError) as soon as the bound is passed, and the connection is closed;
- the body streamed as it arrives, each read at most 64 KiB, and reading paused while
  256 KiB wait for a slow reader. Bodies are handed over raw, as httpx expects of a transport:
  `aiter_bytes` decodes Content-Encoding, and so does the proxy's `response_body`.

Failures raise httpx's own exceptions: WriteTimeout and ReadTimeout (from the request's
`timeout` extension), ReadError (dropped mid-answer), RemoteProtocolError (not HTTP, switched
protocols, closed unanswered, and ResponseHeadTooLarge).

Never sends a request twice: when a kept-alive connection closes without answering, the
request may have reached the upstream, so RemoteProtocolError is raised (as httpcore and
aiohttp do for a POST) and the caller decides; the stream session retries it as a new attempt.
"""

from __future__ import annotations

import asyncio
import enum
import math
import select
from collections.abc import Callable
from typing import cast

import httptools
import httpx

# Body bytes buffered for a reader that is not keeping up before the socket stops being
# read, so a slow client pushes back on the upstream instead of growing memory.
_READ_HIGH_WATER = 256 * 1024
# The most one read hands over: parsing it must not keep the event loop from noticing a
# client that left.
_MAX_READ = 64 * 1024
# The most a response head may take: its status line and header lines, the 1xx interim heads
# before it included (SPEC §5b). h11's default, so any upstream that httpx's own transport
# can read fits; nginx, in front of many upstreams, refuses heads over 4 or 8 KiB already.
MAX_RESPONSE_HEAD = 16 * 1024
_HEAD_TOO_LARGE = (
    f"upstream sent a response head (status line and headers) over {MAX_RESPONSE_HEAD} bytes"
)

Origin = tuple[str, str, int]


class ResponseHeadTooLarge(httpx.RemoteProtocolError):
    """The upstream's response head went past MAX_RESPONSE_HEAD bytes."""


class ConnectionState(enum.Enum):
    NEW = enum.auto()  # connected; no request sent yet
    ACTIVE = enum.auto()  # carrying a request: its answer is awaited or being read
    IDLE = enum.auto()  # its last answer was whole and may be followed by another request
    CLOSED = enum.auto()  # by either side; never used again


class _Phase(enum.Enum):
    """How far the answer to the request in flight has come."""

    HEAD = enum.auto()  # waiting for the status line and headers
    INTERIM = enum.auto()  # a 1xx head is in: the real answer follows it
    BODY = enum.auto()  # the head is in, the body arriving
    COMPLETE = enum.auto()  # the whole answer is in (its reader may not have taken it all)
    FAILED = enum.auto()  # `error` says why


class _Body:
    """Body bytes received and not yet read, and the socket paused while too many wait."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._read_paused = False

    @property
    def pending(self) -> bool:
        return bool(self._chunks)

    def append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()

    def take(self) -> bytes:
        """The body bytes received so far, as one chunk of at most _MAX_READ."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) > _MAX_READ:
            self._chunks = [data[_MAX_READ:]]
            self._buffered = len(data) - _MAX_READ
            data = data[:_MAX_READ]
        else:
            self._chunks = []
            self._buffered = 0
        if self._read_paused and self._buffered < _READ_HIGH_WATER:
            self._read_paused = False
            self._transport.resume_reading()
        return data


class _Response:
    """The answer to one request as httptools parses it, and its body until it is read."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        close_connection: Callable[[], None],
    ) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.phase = _Phase.HEAD
        self.error: httpx.TransportError | None = None
        self._loop = loop
        self._transport = transport
        self._close_connection = close_connection
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._received = 0
        self._framed_by_close = True  # until a length or chunked encoding says otherwise
        self._keep_alive = False
        self.body = _Body(transport)

    @property
    def reusable(self) -> bool:
        """Whole, read to the end, and the upstream willing to take another request."""
        return self.phase is _Phase.COMPLETE and self._keep_alive and not self.body.pending

    def feed(self, data: bytes) -> None:
        allowance = MAX_RESPONSE_HEAD - self._received
        if len(data) > allowance and self._in_head():
            # Until the head ends, every byte received is head: parse no more of it than the
            # bound, so neither httptools nor we hold more (SPEC §5b).
            head, data = data[:allowance], data[allowance:]
            if head:
                self._parse(head)
            if self._in_head():
                self.fail(ResponseHeadTooLarge(_HEAD_TOO_LARGE))
            if self.error is not None:
                return
        self._parse(data)

    def _in_head(self) -> bool:
        return self.phase in (_Phase.HEAD, _Phase.INTERIM)

    def _parse(self, data: bytes) -> None:
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(httpx.RemoteProtocolError("upstream switched protocols"))
        except httptools.HttpParserError as exc:
            if self.phase is _Phase.COMPLETE:  # the answer stands; the connection cannot be reused
                self._close_connection()
            else:
                self.fail(httpx.RemoteProtocolError(f"malformed HTTP from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None, kept_alive: bool) -> None:
        if self.phase in (_Phase.COMPLETE, _Phase.FAILED):
            return
        if self.phase is _Phase.BODY and self._framed_by_close and exc is None:
            # No length and not chunked: the body ends where the connection does.
            self.phase = _Phase.COMPLETE
            self._wake()
        elif self._received == 0:
            kept = "kept-alive " if kept_alive else ""
            self.fail(httpx.RemoteProtocolError(f"upstream closed the {kept}connection unanswered"))
        else:
            self.fail(httpx.ReadError("upstream connection dropped mid-response"))

    def fail(self, error: httpx.TransportError) -> None:
        self.phase = _Phase.FAILED
        self.error = error
        self._close_connection()
        self._wake()

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has news: the head, body bytes, the end, or an error."""
        waiter = self._waiter = self._loop.create_future()
        try:
            if timeout is None:
                await waiter
            else:
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            self._waiter = None

    async def receive_head(self, timeout: float | None) -> None:
        while self._in_head():
            try:
                await self.wait(timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("no response head from upstream in time") from None
        if self.error is not None:
            # Also when a kept-alive connection closes unanswered: the request may have
            # reached the upstream, so it is not sent again here (nor by httpcore or
            # aiohttp); the session retries it as a new, counted attempt.
            raise self.error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.phase is _Phase.COMPLETE:  # a second answer in the same read: stop parsing
            raise httptools.HttpParserError("bytes after the response")

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed_by_close = False

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            self.phase = _Phase.INTERIM
            return
        self.status = status
        self.phase = _Phase.BODY
        if status in (204, 304):
            self._framed_by_close = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.phase is _Phase.INTERIM:
            self.phase = _Phase.HEAD
            self.headers = []
            self.reason = b""
            return
        self.phase = _Phase.COMPLETE
        # llhttp only knows this inside its callbacks.
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()


class Connection(asyncio.Protocol):
    """One upstream socket and its state; the answer in flight is its `_Response`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, keepalive_expiry: float
    ) -> None:
        self.origin = origin
        self._loop = loop
        self._keepalive_expiry = keepalive_expiry
        self._state = ConnectionState.NEW
        self._expires_at = math.inf
        self._requests = 0
        self._transport: asyncio.Transport | None = None
        self._response: _Response | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def expires_at(self) -> float:
        """When an idle connection stops being offered (the loop's clock); never otherwise."""
        return self._expires_at

    def is_available(self) -> bool:
        return self._state is ConnectionState.IDLE

    def has_expired(self, now: float) -> bool:
        return self._state is ConnectionState.IDLE and now >= self._expires_at

    def is_idle_and_silent(self) -> bool:
        """Idle, and neither bytes nor EOF wait on the socket: the upstream has not closed it
        or spoken.

        Asked just before a request is written to a kept-alive connection, because what
        arrived since the event loop last looked is only visible on the socket itself.
        """
        if self._state is not ConnectionState.IDLE or self._transport is None:
            return False
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()  # not select(): descriptors above 1023 are common here
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    async def exchange(
        self,
        message: bytes,
        timeouts: dict[str, float | None],
        release: Callable[[Connection], None],
    ) -> httpx.Response:
        """Sends one request and waits for its answer's head; `release` gets the connection
        back once the body is closed."""
        try:
            response = self._send_request(message)
            await self._drain(timeouts.get("write"))
            await response.receive_head(timeouts.get("read"))
        except BaseException:
            self.close()
            raise
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=ResponseStream(self, response, timeouts.get("read"), release),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )

    def response_closed(self, response: _Response) -> None:
        """Its reader is done with the answer: idle if another request may follow, or closed."""
        if self._state is ConnectionState.ACTIVE and response.reusable:
            self._state = ConnectionState.IDLE
            self._expires_at = self._loop.time() + self._keepalive_expiry
        else:
            self.close()

    def close(self) -> None:
        if self._state is not ConnectionState.CLOSED:
            self._state = ConnectionState.CLOSED
            self._expires_at = math.inf
            if self._transport is not None:
                self._transport.close()

    def _send_request(self, message: bytes) -> _Response:
        if self._state is ConnectionState.CLOSED or self._transport is None:
            raise httpx.RemoteProtocolError("upstream closed the connection before the request")
        assert self._state is not ConnectionState.ACTIVE, "one request at a time"
        self._state = ConnectionState.ACTIVE
        self._expires_at = math.inf
        self._requests += 1
        self._response = _Response(self._loop, self._transport, self.close)
        self._transport.write(message)
        return self._response

    async def _drain(self, timeout: float | None) -> None:
        if not self._write_paused or self._state is ConnectionState.CLOSED:
            return
        self._drained = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request upstream") from None
        finally:
            self._drained = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        response = self._response
        if (
            self._state is not ConnectionState.ACTIVE
            or response is None
            or response.phase is _Phase.COMPLETE
        ):
            self.close()  # bytes nobody asked for, or after the answer: not for any request of ours
            return
        response.feed(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = ConnectionState.CLOSED
        self._expires_at = math.inf
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._response is not None:
            self._response.connection_lost(exc, kept_alive=self._requests > 1)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class ResponseStream(httpx.AsyncByteStream):
    """The body as it arrives: each read hands over everything received until then.

    An iterator of its own rather than an async generator, and read directly by
    `response_body` rather than through httpx's `aiter_raw`: two generator steps less per read.
    A read that finds bytes already there takes one step through the event loop before it
    returns (`asyncio.sleep(0)`), as a read that waited did: a bursty upstream whose bytes are
    always there must not keep the loop from other streams or from a client that left (the
    stream is cancelled at that step). Nothing above the transport needs to do it again.
    """

    def __init__(
        self,
        connection: Connection,
        response: _Response,
        read_timeout: float | None,
        release: Callable[[Connection], None],
    ) -> None:
        self._connection = connection
        self._response = response
        self._read_timeout = read_timeout
        self._release = release
        self._closed = False

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        response = self._response
        data = response.body.take()
        if data:
            await asyncio.sleep(0)  # it did not wait: a step through the loop all the same
            return data
        while True:
            if response.phase is _Phase.COMPLETE:
                raise StopAsyncIteration
            if response.error is not None:
                raise response.error
            try:
                await response.wait(self._read_timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("upstream sent nothing in time") from None
            data = response.body.take()
            if data:
                return data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._connection.response_closed(self._response)
            self._release(self._connection)
