"""The transport httpx sends through: connections per origin, kept alive and reused.

Supports HTTP/1.1 over TCP or TLS (ALPN http/1.1), for `http` and `https` URLs only; other
schemes are httpx.UnsupportedProtocol, and so are HTTP/2 and proxies (no ambient HTTP_PROXY:
upstreams are explicit). Connect timeouts come from the request's `timeout` extension
(ConnectTimeout; a refused or unresolvable host is ConnectError).

Keep-alive: connections per origin, reused most recent first, for `keepalive_expiry` seconds,
and only if nothing (bytes or EOF) arrived on them while idle, as seen on the socket itself
just before the request is written.

Never limits connections (the proxy's stream cap does), keeps cookies, or looks at an idle
socket other than the one about to carry a request.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import deque

import httpx

from proxy.upstream.connection import Connection, Origin
from proxy.upstream.serialise import refuse_unframeable, request_bytes

_DEFAULT_PORTS = {"http": 80, "https": 443}


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
        # Oldest first: released connections join at the right, are reused from the right,
        # and expire from the left.
        self._idle: dict[Origin, deque[Connection]] = {}
        self._expiry: asyncio.TimerHandle | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin(request)
        refuse_unframeable(request)
        message = request_bytes(request, await request.aread())
        timeouts = request.extensions.get("timeout", {})
        connection = self._idle_connection(origin) or await self._connect(
            origin, timeouts.get("connect"), request
        )
        return await connection.exchange(message, timeouts, self._release)

    async def aclose(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request
    ) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, origin, self._keepalive_expiry),
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

    def _idle_connection(self, origin: Origin) -> Connection | None:
        """The most recently used connection to origin that is still fit to send on."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if (
                connection.is_available()
                and not connection.has_expired(now)
                and connection.is_idle_and_silent()
            ):
                return connection
            connection.close()
        return None

    def _release(self, connection: Connection) -> None:
        """A response is closed: keep its connection for the next request if it is idle."""
        if not connection.is_available():
            return
        idle = self._idle.setdefault(connection.origin, deque())
        if len(idle) >= self._max_idle:
            connection.close()
            return
        idle.append(connection)
        if self._expiry is None:
            self._schedule_expiry(connection.expires_at)

    def _schedule_expiry(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(when, self._close_expired, when)

    def _close_expired(self, when: float) -> None:
        """Closes every idle connection expired by `when` and waits for the next to expire."""
        # The loop runs a timer once its time is within the clock's resolution of `when`:
        # what expires at `when` is expired now.
        now = max(asyncio.get_running_loop().time(), when)
        self._expiry = None
        next_expiry = math.inf
        for idle in self._idle.values():
            while idle and (idle[0].has_expired(now) or not idle[0].is_available()):
                idle.popleft().close()
            if idle:
                next_expiry = min(next_expiry, idle[0].expires_at)
        if next_expiry < math.inf:
            self._schedule_expiry(next_expiry)


def _origin(request: httpx.Request) -> Origin:
    url = request.url
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
    return (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])


def _default_tls() -> ssl.SSLContext:
    tls = ssl.create_default_context()
    tls.set_alpn_protocols(["http/1.1"])
    return tls
