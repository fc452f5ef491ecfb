"""The upstream HTTP clients: many small httpx pools rather than one big one.

httpcore's pool walks every connection it holds, and polls each idle socket, whenever a
request starts or ends: fine at a hundred connections, quadratic misery at thousands of long
streams. Spreading streams over pools of about POOL_SIZE keeps each walk short. Pools fill in
order (stream n goes to pool n // POOL_SIZE) rather than in turn, so light traffic stays on the
first pool and keeps reusing its warm connections.
"""

from __future__ import annotations

import math
import ssl

import httpx

from proxy.settings import Settings

POOL_SIZE = 32


class UpstreamClients:
    def __init__(self, settings: Settings) -> None:
        pools = max(1, math.ceil(settings.max_concurrent_streams / POOL_SIZE))
        # One TLS context for all: each costs about a megabyte of certificates.
        tls = ssl.create_default_context()
        self._clients = [_client(settings, tls) for _ in range(pools)]
        self._open = 0

    def acquire(self) -> httpx.AsyncClient:
        """The client for one more upstream request; `release` when it is over."""
        client = self._clients[min(self._open // POOL_SIZE, len(self._clients) - 1)]
        self._open += 1
        return client

    def release(self) -> None:
        self._open -= 1

    @property
    def first(self) -> httpx.AsyncClient:
        return self._clients[0]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def _client(settings: Settings, tls: ssl.SSLContext) -> httpx.AsyncClient:
    """Sized for long streams: httpx's defaults (100 connections, a 5 s pool wait, per-read
    timeouts) are wrong here. The relay bounds connects, first tokens and idle gaps itself,
    and the proxy's stream cap bounds connections, so a pool never makes a stream wait."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=None,
            write=settings.connect_timeout,
            pool=settings.connect_timeout,
        ),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=POOL_SIZE // 2,
            keepalive_expiry=30,
        ),
        # Compressed streams would have to be inflated before parsing; plain is what LLM
        # servers send anyway.
        headers={"Accept-Encoding": "identity"},
        verify=tls,
        # Upstreams are configured explicitly; ambient HTTP(S)_PROXY must not reroute them.
        trust_env=False,
    )
