"""A fake of every upstream dialect, on a real socket, with faults on demand.

It is the proxy's built-in default upstream, the test suite's and the benchmark's. It is a raw
asyncio protocol over httptools (no framework) so that it costs little per token and can do what
a framework would not: hang before the headers, drop a connection mid-body, end a body without
its end marker, and notice the very moment a client leaves.

Requests steer it with whitespace-separated directives anywhere in the prompt, `@name=value`:

    @tokens=N          text tokens to stream (default: the constructor's `tokens`)
    @delay=SECONDS     pause before each token (default: the constructor's `token_delay`)
    @fault=NAME        one of `Fault`; `@after=K` tokens (default 2) precede a mid-stream one
    @status=NNN        with `@fault=status` (default 500); `@retry_after=S` adds `Retry-After`,
                       `@echo_auth=1` puts the request's credential in the error message, as
                       careless upstreams do
    @fail_times=N      only the first N requests with this exact prompt get the fault
    @split=N           write the body N bytes at a time, each piece its own chunk and write
    @model_missing=1   ollama only: the 404 of a model that was never pulled

Unknown directives are ignored; directives stay part of the prompt (and of its reply's seed).
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from http.client import responses as REASON_PHRASES
from typing import Any, Final, Literal, cast, get_args

import httptools
import orjson

VOCABULARY: tuple[str, ...] = (
    "Hello",
    " world",
    ",",
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    ".",
    "\n",
    " é",
    "ß",
    " ñ",
    " 世界",
    " €",
    "‽",
    " 🙂",
    "𝄞",
    " 🚀",
    "\r\n",
    "\u2028",
    "\u0085",
    "\x0c",
    ' "quoted\\"',
    ":",
    "data: ",
    "\r",
    " over",
    " lazy",
    " dog",
    " café",
    " naïve",
    " 日本語",
    " ✓",
    " Ω",
    " 🤖",
    "\t",
    " end",
    "!",
    " ok",
)


def reply_tokens(prompt: str, count: int) -> list[str]:
    """The fake's reply to prompt, token by token: the same prompt always gets the same text."""
    return list(_tokens(zlib.crc32(prompt.encode()), 0, count))


def _tokens(seed: int, start: int, stop: int) -> Iterator[str]:
    size = len(VOCABULARY)
    return (VOCABULARY[(seed + i * 7) % size] for i in range(start, stop))


def reply_text(prompt: str, count: int) -> str:
    return "".join(reply_tokens(prompt, count))


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


Fault = Literal[
    "status",
    "hang-headers",
    "hang-before",
    "hang-mid",
    "drop-mid",
    "no-end",
    "malformed",
    "error-event",
]
FAULTS: Final[frozenset[str]] = frozenset(get_args(Fault))
MID_STREAM_FAULTS: Final[frozenset[str]] = frozenset(
    {"hang-mid", "drop-mid", "malformed", "error-event"}
)

_DIRECTIVE = re.compile(r"(?<!\S)@(\w+)=(\S+)")


def _integer(found: dict[str, str], name: str, default: int, least: int = 0) -> int:
    text = found.get(name, "")
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        return default
    return int(text)


def _seconds(found: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(found[name])
    except (KeyError, ValueError):
        return default
    return value if 0 <= value < float("inf") else default


@dataclass(slots=True, frozen=True)
class Directives:
    """The options one prompt asks for; a malformed value leaves its default."""

    tokens: int
    delay: float
    fault: Fault | None = None
    after: int = 2
    status: int = 500
    retry_after: str | None = None
    echo_auth: bool = False
    fail_times: int | None = None
    split: int = 0
    model_missing: bool = False

    @classmethod
    def parse(cls, prompt: str, *, tokens: int, delay: float) -> Directives:
        found = dict(_DIRECTIVE.findall(prompt)) if "@" in prompt else {}
        if not found:
            return cls(tokens=tokens, delay=delay)
        fault = found.get("fault")
        status = _integer(found, "status", 500, least=100)
        fail_times = _integer(found, "fail_times", -1)
        return cls(
            tokens=_integer(found, "tokens", tokens),
            delay=_seconds(found, "delay", delay),
            fault=cast(Fault, fault) if fault in FAULTS else None,
            after=_integer(found, "after", 2),
            status=status if status <= 999 else 500,
            retry_after=found.get("retry_after"),
            echo_auth=found.get("echo_auth") == "1",
            fail_times=fail_times if fail_times >= 0 else None,
            split=_integer(found, "split", 0, least=1),
            model_missing=found.get("model_missing") == "1",
        )


def sse(payload: Any, *, event: bytes = b"", space: bool = True) -> bytes:
    head = b"event: " + event + b"\n" if event else b""
    return head + (b"data: " if space else b"data:") + orjson.dumps(payload) + b"\n\n"


class WireFormat:
    """How one upstream API frames a streamed reply; a subclass per dialect fills it in."""

    path = ""
    content_type = b"text/event-stream"

    def prompt(self, body: dict[str, Any]) -> str:
        """The content of the last user message (a string, or text blocks to join)."""
        messages = body.get("messages")
        for message in reversed(messages if isinstance(messages, list) else []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    def preamble(self, model: str) -> bytes:
        return b""

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        raise NotImplementedError

    def epilogue(self) -> bytes:
        """What follows the last token even in a reply cut short of its end marker."""
        return b""

    def end(self, model: str, text: str, total: int) -> bytes:
        """The end marker: a client that never sees it must take the reply as cut short."""
        raise NotImplementedError

    def error_event(self) -> bytes:
        raise NotImplementedError

    def malformed(self) -> bytes:
        return b'data: {"choices":[{"index":0,"delta":{"content":"unterminated\n\n'

    def error_body(self, status: int, message: str) -> Any:
        kind = "rate_limit_error" if status == 429 else "server_error"
        return {"error": {"message": message, "type": kind, "code": None}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (block.get("text") for block in content if isinstance(block, dict))
        return "".join(text for text in texts if isinstance(text, str))
    return ""


class OpenAIChatFormat(WireFormat):
    path = "/v1/chat/completions"

    def _chunk(self, model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [choice],
        }
        return sse(chunk)

    def preamble(self, model: str) -> bytes:
        # Real servers send keep-alive comments; a client must skip them.
        return self._chunk(model, {"role": "assistant", "content": ""}) + b": keep-alive\n\n"

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._chunk(model, {"content": text})

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._chunk(model, {}, "stop") + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})


class OpenAICompletionsFormat(WireFormat):
    path = "/v1/completions"

    def prompt(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def _chunk(self, model: str, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        chunk = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [choice],
        }
        return sse(chunk)

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._chunk(model, text)

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._chunk(model, "", "stop") + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})

    def malformed(self) -> bytes:
        return b'data: {"choices":[{"text":"unterminated\n\n'


class OllamaFormat(WireFormat):
    path = "/api/chat"
    content_type = b"application/x-ndjson"

    def _line(self, model: str, content: str, **fields: Any) -> bytes:
        line = {
            "model": model,
            "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content},
            "done": False,
            **fields,
        }
        return orjson.dumps(line) + b"\n"

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._line(model, text)

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._line(
            model, "", done=True, done_reason="stop", total_duration=1, eval_count=total
        )

    def error_event(self) -> bytes:
        return b'{"error":"fake in-band error"}\n'

    def malformed(self) -> bytes:
        return b'{"message":{"content":"unterminated\n'

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}


class TGIFormat(WireFormat):
    path = "/generate_stream"
    _SPECIAL: Final = {"id": 0, "text": "<|special|>", "logprob": 0.0, "special": True}
    _END_OF_SEQUENCE: Final = {"id": 2, "text": "</s>", "logprob": 0.0, "special": True}

    def prompt(self, body: dict[str, Any]) -> str:
        inputs = body.get("inputs")
        return inputs if isinstance(inputs, str) else ""

    def _event(self, token: dict[str, Any], generated_text: str | None = None) -> bytes:
        event = {
            "index": token["id"],
            "token": token,
            "generated_text": generated_text,
            "details": None,
        }
        return sse(event, space=False)  # TGI writes "data:" without the space

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        event = self._event({"id": index, "text": text, "logprob": -0.5, "special": False})
        if index == 1 and total >= 3:
            event += self._event(self._SPECIAL)  # a client must not show special tokens
        return event

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._event(self._END_OF_SEQUENCE, text)

    def error_event(self) -> bytes:
        return sse({"error": "fake in-band error", "error_type": "generation"}, space=False)

    def malformed(self) -> bytes:
        return b'data:{"index":0,"token":{"text":"unterminated\n\n'

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message, "error_type": "overloaded" if status == 429 else "generation"}


class AnthropicFormat(WireFormat):
    path = "/v1/messages"
    _ERROR_TYPES: Final = {429: "rate_limit_error", 529: "overloaded_error"}

    def preamble(self, model: str) -> bytes:
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        block = {"type": "text", "text": ""}
        return (
            sse({"type": "message_start", "message": message}, event=b"message_start")
            + sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                event=b"content_block_start",
            )
            + sse({"type": "ping"}, event=b"ping")
        )

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        delta = {"type": "text_delta", "text": text}
        event = {"type": "content_block_delta", "index": 0, "delta": delta}
        return sse(event, event=b"content_block_delta")

    def epilogue(self) -> bytes:
        return sse({"type": "content_block_stop", "index": 0}, event=b"content_block_stop")

    def end(self, model: str, text: str, total: int) -> bytes:
        stop = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": total},
        }
        return sse(stop, event=b"message_delta") + sse(
            {"type": "message_stop"}, event=b"message_stop"
        )

    def error_event(self) -> bytes:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return sse(error, event=b"error")

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0\n\n'

    def error_body(self, status: int, message: str) -> Any:
        kind = self._ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}


FORMATS: Final[dict[str, WireFormat]] = {
    wire.path: wire
    for wire in (
        OpenAIChatFormat(),
        OpenAICompletionsFormat(),
        OllamaFormat(),
        TGIFormat(),
        AnthropicFormat(),
    )
}


class FakeUpstream:
    """The server: binds a port, keeps what it received, and tells when clients leave."""

    def __init__(
        self, *, tokens: int = 12, token_delay: float = 0.0, max_records: int = 100_000
    ) -> None:
        self.tokens = tokens
        self.token_delay = token_delay
        # As the proxy's built-in upstream it may serve millions of requests: keep the latest.
        self.max_records = max_records
        self.records: list[FakeRequest] = []
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fault_counts: Counter[str] = Counter()
        self._changed = asyncio.Event()

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

    def find(self, marker: str) -> list[FakeRequest]:
        return [record for record in list(self.records) if marker in record.prompt]

    async def wait_received(self, marker: str, timeout: float) -> FakeRequest:
        """The first request whose prompt contains marker, once it has arrived."""
        return await self._wait_for(marker, timeout, lambda record: True)

    async def wait_disconnected(self, marker: str, timeout: float) -> FakeRequest:
        """A request whose prompt contains marker, once its client has left it unfinished."""
        return await self._wait_for(marker, timeout, lambda r: r.disconnected_at is not None)

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
        if self.max_records > 0:
            if len(self.records) >= self.max_records:
                del self.records[: len(self.records) - self.max_records // 2]
            self.records.append(record)
        self.changed()

    def changed(self) -> None:
        """Wakes every waiter; each then waits on a fresh event."""
        self._changed.set()
        self._changed = asyncio.Event()

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

    async def _wait_for(
        self, marker: str, timeout: float, done: Callable[[FakeRequest], bool]
    ) -> FakeRequest:
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                for record in self.find(marker):
                    if done(record):
                        return record
                await changed.wait()


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
            self._fake.changed()

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

    async def run(self, keep_alive: bool) -> None:
        wire, directives, fault = self._wire, self._directives, self._fault
        self._connection.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n%b\r\n"
            % (wire.content_type, b"" if keep_alive else b"Connection: close\r\n")
        )
        if fault == "hang-before":
            await _forever()
        total = directives.tokens
        mid_stream_fault = fault if fault in MID_STREAM_FAULTS else None
        after = min(directives.after, total) if mid_stream_fault else total
        await self._send(wire.preamble(self._model))
        await self._send_tokens(0, after)
        if mid_stream_fault and not await self._act_out(mid_stream_fault):
            return
        await self._send_tokens(after, total)
        await self._send(wire.epilogue())
        if fault != "no-end":
            text = reply_text(self._record.prompt, total)
            await self._send(wire.end(self._model, text, total))
        self._finish()

    async def _send_tokens(self, start: int, stop: int) -> None:
        # Made one at a time: a reply of millions of tokens starts at once, in little memory.
        tokens = _tokens(zlib.crc32(self._record.prompt.encode()), start, stop)
        token, delay = self._wire.token, self._directives.delay
        model, total = self._model, self._directives.tokens
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


async def serve_fake_upstream(host: str, port: int, *, tokens: int, token_delay: float) -> None:
    """Runs the fake alone until cancelled (`python -m proxy fake-upstream`)."""
    # Nobody reads a standalone fake's records, and a benchmark sends it millions of requests.
    fake = FakeUpstream(tokens=tokens, token_delay=token_delay, max_records=0)
    await fake.start(host, port)
    print(f"fake upstream listening on http://{host}:{fake.port}", flush=True)
    try:
        await _forever()
    finally:
        await fake.aclose()
