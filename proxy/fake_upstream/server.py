"""The fake's server: an HTTP/1.1 protocol over httptools, and `FakeUpstream` that binds it.

A raw asyncio protocol (no framework) so that it costs little per token and can do what a
framework would not: hang before the headers, drop a connection mid-body, end a body without
its end marker, and notice the very moment a client leaves. It keeps nothing per request once
the reply is sent: recording is `records.RecordingFakeUpstream`'s job, for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, cast

import httptools
import orjson

from proxy.fake_upstream.answers import Answer, forever
from proxy.fake_upstream.directives import FaultSchedule
from proxy.fake_upstream.formats import FORMATS
from proxy.fake_upstream.request import FakeRequest


class FakeUpstream:
    """The server: binds a port, answers every dialect, and tells when clients leave.

    `tokens` is the reply's length when a prompt does not say (`@tokens=N`); None sends the
    whole reply.
    """

    def __init__(
        self,
        *,
        tokens: int | None = None,
        token_delay: float = 0.0,
        slow_start: float = 0.0,
        slow_every: int = 1,
    ) -> None:
        self.tokens = tokens
        self.token_delay = token_delay
        # A replica slow to start (issue 30's hedging): every `slow_every`-th streamed reply
        # holds its first part `slow_start` seconds after its response head.
        self.slow_start = slow_start
        self.slow_every = max(1, slow_every)
        self.replies_started = 0
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.faults = FaultSchedule()

    def next_slow_start(self) -> float:
        """The hold before the next reply's first part (0: none)."""
        self.replies_started += 1
        return self.slow_start if self.replies_started % self.slow_every == 0 else 0.0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        # The benchmark opens thousands of connections at once.
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake upstream is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # What the connections report and ask for.

    def connection_made(self, connection: _Connection) -> None:
        self.connections_accepted += 1
        self._connections.add(connection)

    def connection_lost(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def received(self, record: FakeRequest) -> None:
        """A request arrived whole: the hook for keeping it, which the server does not."""

    def clients_left(self, records: list[FakeRequest]) -> None:
        """Unfinished requests lost their client: the hook for waiting on that."""

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class _Connection(asyncio.Protocol):
    """One client connection: parses its requests and answers them in order (keep-alive)."""

    def __init__(self, fake: FakeUpstream) -> None:
        self._fake = fake
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._pending: deque[tuple[FakeRequest, bool]] = deque()
        self._current: FakeRequest | None = None
        self._answering: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed_by_us = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._fake.connection_made(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._reject()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed_by_us:
            self._client_left(time.monotonic())
        self._fake.connection_lost(self)
        if self._answering is not None:
            self._answering.cancel()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("latin-1")
        path = httptools.parse_url(self._url).path.decode("latin-1")
        body = b"".join(self._body)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        wire = FORMATS.get(path)
        prompt = wire.prompt(payload) if wire is not None and isinstance(payload, dict) else ""
        record = FakeRequest(method, path, self._headers, body, payload, prompt, time.monotonic())
        self._fake.received(record)
        # Pipelined requests wait their turn: responses must go out in request order.
        self._pending.append((record, self._parser.should_keep_alive()))
        if self._answering is None:
            self._answering = self._fake.spawn(self._answer_in_order())

    # What replies use

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        """Returns once the transport wants more: a slow reader slows the reply down."""
        if not self._writable.is_set():
            await self._writable.wait()

    def close(self) -> None:
        self._closed_by_us = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drops the connection at once, unflushed: a broken upstream, or shutdown."""
        self._closed_by_us = True
        if self._transport is not None:
            self._transport.abort()

    # Internals

    async def _answer_in_order(self) -> None:
        try:
            while self._pending and not self.closing:
                record, keep_alive = self._pending.popleft()
                self._current = record
                fake = self._fake
                await Answer(
                    self,
                    record,
                    keep_alive,
                    tokens=fake.tokens,
                    token_delay=fake.token_delay,
                    slow_start=fake.next_slow_start(),
                    faults=fake.faults,
                ).run()
                self._current = None
                if not keep_alive:
                    self.close()
        except Exception:
            self.abort()  # a bug in the fake must fail its client, not leave it hanging
            raise
        finally:
            self._answering = None

    def _client_left(self, now: float) -> None:
        unfinished = [record for record, _ in self._pending]
        if self._current is not None:
            unfinished.append(self._current)
        for record in unfinished:
            if record.finished_at is None:
                record.disconnected_at = now
        if unfinished:
            self._fake.clients_left(unfinished)

    def _reject(self) -> None:
        body = b'{"error":"malformed HTTP request"}'
        self.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body)
        )
        self.close()


async def serve_fake_upstream(
    host: str,
    port: int,
    *,
    tokens: int | None,
    token_delay: float,
    slow_start: float = 0.0,
    slow_every: int = 1,
) -> None:
    """Runs the fake alone until cancelled (`python -m proxy fake-upstream`)."""
    fake = FakeUpstream(
        tokens=tokens, token_delay=token_delay, slow_start=slow_start, slow_every=slow_every
    )
    await fake.start(host, port)
    print(f"fake upstream listening on http://{host}:{fake.port}", flush=True)
    try:
        await forever()
    finally:
        await fake.aclose()
