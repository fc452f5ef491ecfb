"""`python -m proxy serve`: what reaches uvicorn (SPEC §5b)."""

from __future__ import annotations

import asyncio
import time

import uvicorn

from proxy.__main__ import server_options
from tests.servers import ProxyProcess, proxy_settings


def test_defaults_keep_idle_connections_75_s_and_drain_for_30_s() -> None:
    config = uvicorn.Config(
        "proxy.app:app_from_environment", **server_options(proxy_settings(None))
    )
    assert config.timeout_keep_alive == 75  # past a load balancer's usual 60 s (uvicorn: 5)
    assert config.timeout_graceful_shutdown == 30


async def test_the_proxy_closes_a_kept_alive_connection_after_keepalive_timeout() -> None:
    # A value below uvicorn's own 5 s shows the setting is what decides.
    proxy = ProxyProcess(PROXY_KEEPALIVE_TIMEOUT="1")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        idle_since = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the proxy
        assert time.monotonic() - idle_since < 4
        writer.close()
    finally:
        proxy.close()
