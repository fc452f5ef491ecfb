"""HTTP/1.1 to the upstreams, for httpx: asyncio protocols, parsed by httptools.

Measured on the proxy's bench (interleaved runs, 256 concurrent streams), this transport
keeps 0.89 of the direct tokens/s where httpx-aiohttp 0.2 keeps 0.77 and httpcore 0.19, at
2.9 ms of CPU per request against httpx-aiohttp's 3.8 (README, "Upstream transport
contract"); tests/test_upstream_transport.py pins the behaviour below.

The contract, as an httpx.AsyncBaseTransport:

Supports
- HTTP/1.1 over TCP or TLS (ALPN http/1.1); `http` and `https` URLs only.
- Requests with a bytes body (`content=`, `json=`, `data=`), sent with Content-Length as
  one write; header names and values checked against the RFC 9110 field grammar (a name is
  a token; a value is visible characters and obs-text with single spaces or tabs between).
- Responses framed by Content-Length, chunked encoding or the end of the connection, after
  any 1xx interim answers; the body is streamed as it arrives, each read at most 64 KiB,
  and reading pauses while 256 KiB wait for a slow reader. Bodies are handed over raw, as
  httpx expects of a transport: `aiter_bytes` decodes Content-Encoding, and so does the
  proxy's `upstream_http.response_body`.
- Keep-alive: connections per origin, reused most recent first, for `keepalive_expiry`
  seconds, and only if nothing (bytes or EOF) arrived on them while idle, as seen on the
  socket itself just before the request is written.
- Connect, write and read timeouts from the request's `timeout` extension; failures raise
  httpx's own exceptions (ConnectError, ConnectTimeout, WriteTimeout, ReadTimeout,
  ReadError, RemoteProtocolError, LocalProtocolError, UnsupportedProtocol).

Refuses, with httpx.UnsupportedProtocol before a byte is sent
- HEAD (its answer has a length but no body, which httptools cannot be told) and CONNECT.
- Streamed bodies (anything but a bytes body), and `Transfer-Encoding`, `Expect` (the
  body would go out before the interim answer) and `Upgrade` headers.
- Other URL schemes; HTTP/2; proxies (no ambient HTTP_PROXY: upstreams are explicit).

Never
- sends a request twice: when a kept-alive connection closes without answering, the
  request may have reached the upstream, so RemoteProtocolError is raised (as httpcore and
  aiohttp do for a POST) and the caller decides; the stream session retries it as a new attempt.
- limits connections (the proxy's stream cap does), keeps cookies, or looks at an idle
  socket other than the one about to carry a request.
"""

from __future__ import annotations

import asyncio
import re
import select
import ssl
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

# Body bytes buffered for a reader that is not keeping up before the socket stops being
# read, so a slow client pushes back on the upstream instead of growing memory.
_READ_HIGH_WATER = 256 * 1024
# The most one read hands over: parsing it must not keep the event loop from noticing a
# client that left.
_MAX_READ = 64 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 9110 §5.1, §5.5: a field name is a token; a field value is visible characters and
# obs-text, with single spaces or tabs only between them. Stricter than h11, which lets
# control characters other than NUL through for the sake of old servers.
_is_token = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_is_field_value = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?"
).fullmatch
# Requests whose answer or body this transport cannot frame: a HEAD answer carries a length
# but no body (httptools cannot be told so), CONNECT turns the socket into a tunnel, and
# `Expect` waits for an interim answer before the body; streamed bodies are refused by type.
_REFUSED_METHODS = frozenset({"HEAD", "CONNECT"})
_REFUSED_HEADERS = frozenset({b"expect", b"transfer-encoding", b"upgrade"})

Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One upstream socket, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.origin = origin
        self.reused = False
        self.closed = False
        self.idle = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_complete = False
        self.complete = False
        self.error: httpx.TransportError | None = None
        self._received_any = False
        self._informational = False
        self._until_eof = True
        self._keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._read_paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.idle or self.complete:  # bytes after the answer: not for any request of ours
            self.close()
            return
        self._received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("upstream switched protocols"))
        except httptools.HttpParserError as exc:
            if self.complete:  # the answer is whole and stands; the connection cannot be reused
                self.close()
            else:
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP from upstream: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self.complete:
            return
        if self.head_complete and self._until_eof and exc is None:
            # No length and not chunked: the body ends where the connection does.
            self.complete = True
            self._wake()
        elif not self._received_any:
            kept_alive = "kept-alive " if self.reused else ""
            self._fail(
                httpx.RemoteProtocolError(f"upstream closed the {kept_alive}connection unanswered")
            )
        else:
            self._fail(httpx.ReadError("upstream connection dropped mid-response"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer in the same read as the first: stop parsing
            raise httptools.HttpParserError("bytes after the response")

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._until_eof = False

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            self._informational = True
            return
        self.status = status
        self.head_complete = True
        if status in (204, 304):
            self._until_eof = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self.headers = []
            self.reason = b""
            return
        self.complete = True
        # llhttp only knows this inside its callbacks.
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()

    # used by the transport and the response stream

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        if not self._write_paused or self.closed:
            return
        self._drained = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        finally:
            self._drained = None

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
        if self._read_paused and self._buffered < _READ_HIGH_WATER and self._transport:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    def start_request(self) -> None:
        self._reset()
        self._parser = httptools.HttpResponseParser(self)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.error is None
            and not self.closed
            and not self._chunks
            and self._keep_alive
        )

    def silent_while_idle(self) -> bool:
        """Neither bytes nor EOF wait on the socket: the upstream has not closed it or spoken.

        Asked just before a request is written to a kept-alive connection, because what
        arrived since the event loop last looked is only visible on the socket itself.
        """
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()  # not select(): descriptors above 1023 are common here
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _ResponseStream(httpx.AsyncByteStream):
    """The body as it arrives: each read hands over everything received until then."""

    def __init__(
        self, transport: UpstreamTransport, connection: _Connection, read_timeout: float | None
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            data = connection.take()
            if data:
                yield data
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                try:
                    await connection.wait(self._read_timeout)
                except TimeoutError:
                    raise httpx.ReadTimeout("upstream sent nothing in time") from None

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._transport.release(self._connection)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """Kept-alive connections per origin, reused most recent first; no connection limit
    (the proxy's stream cap is the limit), no polling of idle sockets."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        # Under the 5 s that uvicorn-based servers (vLLM among them) keep an idle
        # connection, so we drop it before they do rather than race them to it.
        keepalive_expiry: float = 4.0,
        max_idle_per_origin: int = 512,
    ) -> None:
        # Made once, at start-up: each costs about a megabyte of certificates and ~20 ms.
        self._ssl_context = ssl_context or _default_tls()
        self._keepalive_expiry = keepalive_expiry
        self._max_idle = max_idle_per_origin
        self._idle: dict[Origin, list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        if request.method in _REFUSED_METHODS:
            raise httpx.UnsupportedProtocol(
                f"the upstream transport does not send {request.method} requests", request=request
            )
        if not isinstance(request.stream, httpx.ByteStream):
            raise httpx.UnsupportedProtocol(
                "the upstream transport sends bytes bodies only, not streamed ones",
                request=request,
            )
        message = _serialize(request, await request.aread())
        connection = self._idle_connection(origin) or await self._connect(
            origin, timeouts.get("connect"), request
        )
        return await self._exchange(connection, message, timeouts)

    async def _exchange(
        self, connection: _Connection, message: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        try:
            connection.start_request()
            connection.send(message)
            try:
                await connection.drain(timeouts.get("write"))
            except TimeoutError:
                raise httpx.WriteTimeout("timed out sending the request upstream") from None
            while not connection.head_complete and connection.error is None:
                try:
                    await connection.wait(timeouts.get("read"))
                except TimeoutError:
                    raise httpx.ReadTimeout("no response head from upstream in time") from None
            if connection.error is not None:
                # Also when a kept-alive connection closes unanswered: the request may have
                # reached the upstream, so it is not sent again here (nor by httpcore or
                # aiohttp); the session retries it as a new, counted attempt.
                raise connection.error
        except BaseException:
            connection.close()
            raise
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=_ResponseStream(self, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
        )

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}: {exc}", request=request) from None
        return connection

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        """The most recently used connection to origin that is still fit to send on."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            connection.idle = False
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
                connection.idle_timer = None
            if not connection.closed and connection.silent_while_idle():
                connection.reused = True
                return connection
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        """A response is over: keep its connection for the next request, or close it."""
        if not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            connection.close()
            return
        idle.append(connection)
        connection.idle = True
        connection.idle_timer = asyncio.get_running_loop().call_later(
            self._keepalive_expiry, self._expire, connection
        )

    def _expire(self, connection: _Connection) -> None:
        connection.idle_timer = None
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)
        connection.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _default_tls() -> ssl.SSLContext:
    tls = ssl.create_default_context()
    tls.set_alpn_protocols(["http/1.1"])
    return tls


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request head and body as one write."""
    target = request.url.raw_path
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if not _is_token(name) or not _is_field_value(value):
            raise httpx.LocalProtocolError(
                f"header {name.decode('latin-1')!r} is outside the HTTP field grammar",
                request=request,
            )
        if name.lower() in _REFUSED_HEADERS:
            raise httpx.UnsupportedProtocol(
                f"the upstream transport does not send {name.decode()} requests", request=request
            )
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
