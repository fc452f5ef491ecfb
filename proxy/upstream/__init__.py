"""HTTP/1.1 to the upstreams, for httpx: asyncio protocols, parsed by httptools.

Measured on the proxy's bench (interleaved runs, 256 concurrent streams), this transport
keeps 0.89 of the direct tokens/s where httpx-aiohttp 0.2 keeps 0.77 and httpcore 0.19, at
2.9 ms of CPU per request against httpx-aiohttp's 3.8 (README, "Upstream transport
contract"). Each module holds its part of the contract, and tests/upstream/ mirrors them:

    client.py      UpstreamHTTP: send(method, url, ...) -> httpx.Response, Basic auth from
                   the URL's user info, Accept-Encoding: identity
    pool.py        UpstreamTransport (httpx.AsyncBaseTransport): origins, keep-alive, expiry
    connection.py  one socket's ConnectionState, its responses and their bodies
    serialise.py   the request bytes; the methods, bodies and headers never sent
    inflate.py     response_body: gzip and deflate undone incrementally, others refused

Everything the transport raises is httpx's own (httpx.TransportError and below), and one of
ours beneath them:

    httpx.RemoteProtocolError
    └── ResponseHeadTooLarge   the status line and headers (1xx heads included) went past
                               MAX_RESPONSE_HEAD (16 KiB, as h11's default)
"""

from proxy.upstream.client import UpstreamHTTP
from proxy.upstream.connection import MAX_RESPONSE_HEAD, ResponseHeadTooLarge
from proxy.upstream.inflate import response_body
from proxy.upstream.pool import UpstreamTransport

__all__ = [
    "MAX_RESPONSE_HEAD",
    "ResponseHeadTooLarge",
    "UpstreamHTTP",
    "UpstreamTransport",
    "response_body",
]
