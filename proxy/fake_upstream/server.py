"""The fake's server: an HTTP/1.1 protocol over httptools, and `FakeUpstream` that binds it.

A raw asyncio protocol (no framework) so that it costs little per token and can do what a
framework would not: hang before the headers, drop a connection mid-body, end a body without
its end marker, and notice the very moment a client leaves. It keeps nothing per request once
the reply is sent: recording is `records.RecordingFakeUpstream`'s job, for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from http.client import responses as REASON_PHRASES
from typing import Any, cast

import httptools
import orjson

from proxy.fake_upstream.directives import MID_STREAM_FAULTS, Directives, Fault
from proxy.fake_upstream.formats import FORMATS, OllamaFormat, WireFormat
from proxy.fake_upstream.replies import Reply


@dataclass(slots=True)
class FakeRequest:
    """One request as the fake received it, and what became of it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # the parsed body, or None
    prompt: str
    received_at: float  # time.monotonic() when the request was complete
    # Taken in connection_lost itself: tests prove the proxy lets go of an upstream in 100 ms.
    disconnected_at: float | None = None
    finished_at: float | None = None  # when the fake itself ended (or aborted) the response


class FakeUpstream:
    """The server: binds a port, answers every dialect, and tells when clients leave.

    `tokens` is the reply's length when a prompt does not say (`@tokens=N`); None sends the
    whole reply.
    """

    def __init__(self, *, tokens: int | None = None, token_delay: float = 0.0) -> None:
        self.tokens = tokens
        self.token_delay = token_delay
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fault_counts: Counter[str] = Counter()

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

    def takes_fault(self, prompt: str, directives: Directives) -> bool:
        """Whether this request gets its fault: `@fail_times` spares the later ones."""
        if directives.fault is None:
            return False
        if directives.fail_times is None:
            return True
        self._fault_counts[prompt] += 1
        return self._fault_counts[prompt] <= directives.fail_times


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
                await _Reply(self, self._fake, record, keep_alive).run()
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


async def _forever() -> None:
    """Hangs until cancelled, which is how a client leaving ends a hanging reply."""
    await asyncio.get_running_loop().create_future()


class _Reply:
    """Decides the answer to one request: a probe's, an error, or a stream."""

    def __init__(
        self, connection: _Connection, fake: FakeUpstream, record: FakeRequest, keep_alive: bool
    ) -> None:
        self._connection = connection
        self._fake = fake
        self._record = record
        self._keep_alive = keep_alive

    async def run(self) -> None:
        record = self._record
        wire = FORMATS.get(record.path)
        if record.method == "GET" and record.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": "fake"}]})
        elif record.method == "GET" or wire is None:
            self._send_json(404, {"error": f"no such path: {record.path}"})
        elif record.method != "POST":
            self._send_json(405, {"error": "use POST"}, [("Allow", "POST")])
        elif not isinstance(record.json, dict):
            self._send_json(400, wire.error_body(400, "the body is not a JSON object"))
        else:
            await self._answer(wire, record.json)

    async def _answer(self, wire: WireFormat, body: dict[str, Any]) -> None:
        fake, record = self._fake, self._record
        directives = Directives.parse(record.prompt, tokens=fake.tokens, delay=fake.token_delay)
        model = body.get("model")
        model = model if isinstance(model, str) and model else "fake"
        if directives.model_missing and isinstance(wire, OllamaFormat):
            message = f'model "{model}" not found, try pulling it first'
            self._send_json(404, wire.error_body(404, message))
            return
        fault = directives.fault if fake.takes_fault(record.prompt, directives) else None
        if fault == "status":
            self._send_error_status(wire, directives)
            return
        if fault == "hang-headers":
            await _forever()
        stream = _Stream(self._connection, record, wire, directives, fault, model)
        await stream.run(self._keep_alive)

    def _send_error_status(self, wire: WireFormat, directives: Directives) -> None:
        status, message = directives.status, "fake upstream error"
        if directives.echo_auth:
            headers = self._record.headers
            message += f" (credential {headers.get('authorization') or headers.get('x-api-key')})"
        retry_after = directives.retry_after
        headers_out = [("Retry-After", retry_after)] if retry_after is not None else []
        self._send_json(status, wire.error_body(status, message), headers_out)

    def _send_json(
        self, status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        body = orjson.dumps(payload)
        lines = [
            f"HTTP/1.1 {status} {REASON_PHRASES.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        if not self._keep_alive:
            lines.append("Connection: close")
        self._connection.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self._record.finished_at = time.monotonic()


class _Stream:
    """One streamed 200 reply, token by token, with the fault its prompt asked for."""

    def __init__(
        self,
        connection: _Connection,
        record: FakeRequest,
        wire: WireFormat,
        directives: Directives,
        fault: Fault | None,
        model: str,
    ) -> None:
        self._connection = connection
        self._record = record
        self._wire = wire
        self._directives = directives
        self._fault = fault
        self._model = model
        self._reply = Reply(record.prompt, directives.text, directives.tokens)

    async def run(self, keep_alive: bool) -> None:
        wire, directives, fault = self._wire, self._directives, self._fault
        self._connection.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n%b\r\n"
            % (wire.content_type, b"" if keep_alive else b"Connection: close\r\n")
        )
        if fault == "hang-before":
            await _forever()
        total = self._reply.total
        mid_stream_fault = fault if fault in MID_STREAM_FAULTS else None
        after = min(directives.after, total) if mid_stream_fault else total
        await self._send(wire.preamble(self._model))
        await self._send_tokens(0, after)
        if mid_stream_fault and not await self._act_out(mid_stream_fault):
            return
        await self._send_tokens(after, total)
        await self._send(wire.epilogue())
        if fault != "no-end":
            text = "".join(self._reply.tokens(0, total))
            await self._send(wire.end(self._model, text, total))
        self._finish()

    async def _send_tokens(self, start: int, stop: int) -> None:
        tokens = self._reply.tokens(start, stop)
        token, delay = self._wire.token, self._directives.delay
        model, total = self._model, self._reply.total
        for index, text in enumerate(tokens, start):
            if delay:
                await asyncio.sleep(delay)
            elif index % 64 == 63:
                # A fast reader never fills the write buffer, so without this a long reply
                # would hold the loop, and the news of its client leaving, until it ends.
                await asyncio.sleep(0)
            await self._send(token(index, text, model, total))

    async def _act_out(self, fault: str) -> bool:
        """A fault after `@after` tokens; whether the reply goes on after it."""
        if fault == "hang-mid":
            await _forever()
        if fault == "drop-mid":
            self._record.finished_at = time.monotonic()
            self._connection.abort()  # no terminating chunk: the client sees a broken body
            return False
        if fault == "error-event":
            await self._send(self._wire.error_event())
            self._finish()
            return False
        await self._send(self._wire.malformed())
        return True

    async def _send(self, data: bytes) -> None:
        if not data:
            return  # an empty chunk would end the body
        split = self._directives.split
        if not split:
            self._connection.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            for start in range(0, len(data), split):
                piece = data[start : start + split]
                self._connection.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await asyncio.sleep(0)  # each piece reaches the reader on its own
        await self._connection.drain()

    def _finish(self) -> None:
        self._connection.write(b"0\r\n\r\n")
        self._record.finished_at = time.monotonic()


async def serve_fake_upstream(
    host: str, port: int, *, tokens: int | None, token_delay: float
) -> None:
    """Runs the fake alone until cancelled (`python -m proxy fake-upstream`)."""
    fake = FakeUpstream(tokens=tokens, token_delay=token_delay)
    await fake.start(host, port)
    print(f"fake upstream listening on http://{host}:{fake.port}", flush=True)
    try:
        await _forever()
    finally:
        await fake.aclose()
