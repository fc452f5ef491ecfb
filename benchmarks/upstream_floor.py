"""The CPU floor (issue 17): the least a server on the proxy's stack can do per stream.

A raw ASGI app, run under uvicorn with the proxy's settings, that relays the fake upstream
over kept-alive HTTP/1.1: the client's request body goes upstream as it is, and each read of
the upstream's body (everything httptools parsed out of one `data_received`) is written to
the client in one `send`. No FastAPI, no validation, no JSON, no SSE decoding, no timeouts,
no guards: whatever the proxy costs above it is the proxy's own work.

    BENCH_UPSTREAM=127.0.0.1:9000 uvicorn benchmarks.upstream_floor:app --loop uvloop
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import httptools

# uvicorn's ASGI types, loosely: this module is tooling, and keeps to the bare protocol.
Scope = dict[str, Any]
Message = dict[str, Any]

_HOST, _, _PORT = os.environ.get("BENCH_UPSTREAM", "127.0.0.1:9000").partition(":")
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream")],
}
_END = {"type": "http.response.body", "body": b"", "more_body": False}


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to the upstream, one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.lost = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp knows it only here

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self) -> bytes:
        """Everything parsed since the last read; b"" once the response is whole."""
        while not self.chunks:
            if self.complete:
                return b""
            if self.lost:
                raise ConnectionError("upstream closed mid-response")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        return data

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False


_idle: list[_Upstream] = []


async def _connection() -> _Upstream:
    while _idle:
        upstream = _idle.pop()
        if not upstream.lost:
            upstream.reset()
            return upstream
    loop = asyncio.get_running_loop()
    _transport, upstream = await loop.create_connection(_Upstream, _HOST, int(_PORT))
    return upstream


async def _body(receive: Any) -> bytes:
    body: bytes = b""
    while True:
        message: Message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = await _body(receive)
    upstream = await _connection()
    assert upstream.transport is not None
    upstream.transport.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (_HOST.encode(), len(body), body)
    )
    await send(_START)
    while data := await upstream.read():
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send(_END)
    if upstream.keep_alive:
        _idle.append(upstream)
    elif upstream.transport is not None:
        upstream.transport.close()
