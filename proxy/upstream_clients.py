"""The one httpx client every upstream request goes through."""

from __future__ import annotations

import ssl

import httpx

from proxy.settings import Settings
from proxy.upstream_transport import UpstreamTransport


def upstream_client(settings: Settings) -> httpx.AsyncClient:
    """Sized for long streams: httpx's defaults (100 connections, a 5 s pool wait, per-read
    timeouts) are wrong here. The relay bounds connects, first tokens and idle gaps itself,
    and the proxy's stream cap bounds connections, so nothing ever waits for a pool."""
    tls = ssl.create_default_context()
    tls.set_alpn_protocols(["http/1.1"])
    return httpx.AsyncClient(
        transport=UpstreamTransport(ssl_context=tls),
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=None,
            write=settings.connect_timeout,
            pool=settings.connect_timeout,
        ),
        # Compressed streams would have to be inflated before parsing; plain is what LLM
        # servers send anyway.
        headers={"Accept-Encoding": "identity"},
        # Upstreams are configured explicitly; ambient HTTP(S)_PROXY must not reroute them.
        trust_env=False,
    )
