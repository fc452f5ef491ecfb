"""A fake of every upstream dialect, on a real socket, with faults on demand.

It is the proxy's built-in default upstream, the test suite's and the benchmark's. It is a raw
asyncio protocol with httptools (no framework) so that it costs little per token and can do
what a framework would not: hang, drop a connection mid-body, end a body without its marker.

Requests steer it with directives anywhere in the prompt, `@name=value`: `@tokens=N`,
`@delay=SECONDS`, `@fault=NAME` (see `Fault`), `@after=K` (tokens before a mid-stream fault),
`@status=NNN`, `@retry_after=S` and `@echo_auth=1` (with `@fault=status`; the last puts the
request's credential in the error message), `@fail_times=N` (only the first N
requests with this exact prompt get the fault), `@split=N` (write the body N bytes at a time).
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, cast

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

_DIRECTIVE = re.compile(r"@(\w+)=(\S+)")


def reply_tokens(prompt: str, count: int) -> list[str]:
    seed = zlib.crc32(prompt.encode())
    return [VOCABULARY[(seed + i * 7) % len(VOCABULARY)] for i in range(count)]


def reply_text(prompt: str, count: int) -> str:
    return "".join(reply_tokens(prompt, count))


@dataclass(slots=True)
class FakeRequest:
    """One request as the fake received it, and what became of it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    prompt: str
    received_at: float
    disconnected_at: float | None = None
    finished_at: float | None = None


@dataclass(slots=True)
class Directives:
    tokens: int
    delay: float
    fault: str | None = None
    after: int = 2
    status: int = 500
    retry_after: str | None = None
    fail_times: int | None = None
    split: int = 0
    model_missing: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, prompt: str, tokens: int, delay: float) -> Directives:
        found = dict(_DIRECTIVE.findall(prompt))
        number = re.compile(r"\d+(\.\d+)?")
        directives = cls(tokens=tokens, delay=delay, extra=found)
        for name in ("tokens", "after", "status", "fail_times", "split"):
            if name in found and number.fullmatch(found[name]):
                setattr(directives, name, int(float(found[name])))
        if "delay" in found and number.fullmatch(found["delay"]):
            directives.delay = float(found["delay"])
        directives.fault = found.get("fault")
        directives.retry_after = found.get("retry_after")
        directives.model_missing = found.get("model_missing") == "1"
        return directives


def sse(payload: Any, *, event: str | None = None, space: bool = True) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + (b"data: " if space else b"data:") + orjson.dumps(payload) + b"\n\n"


class WireFormat:
    """How one upstream API frames its stream; subclasses fill in the events."""

    path = ""
    content_type = b"text/event-stream"

    def prompt(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return "".join(b.get("text", "") for b in content if isinstance(b, dict))
                return str(content or "")
        return ""

    def preamble(self, model: str) -> bytes:
        return b""

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        raise NotImplementedError

    def end(self, model: str, text: str, total: int) -> bytes:
        raise NotImplementedError

    def error_event(self) -> bytes:
        raise NotImplementedError

    def malformed(self) -> bytes:
        return b'data: {"choices": [{"delta": {"content": "unterminated\n\n'

    def error_body(self, status: int, message: str) -> Any:
        kind = "rate_limit_error" if status == 429 else "server_error"
        return {"error": {"message": message, "type": kind, "code": None}}


class OpenAIChatFormat(WireFormat):
    path = "/v1/chat/completions"

    def _chunk(self, model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [choice],
            }
        )

    def preamble(self, model: str) -> bytes:
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
        return str(body.get("prompt") or "")

    def _chunk(self, model: str, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return sse(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 0,
                "model": model,
                "choices": [choice],
            }
        )

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._chunk(model, text)

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._chunk(model, "", "stop") + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})


class OllamaFormat(WireFormat):
    path = "/api/chat"
    content_type = b"application/x-ndjson"

    def _line(self, payload: dict[str, Any]) -> bytes:
        return orjson.dumps(payload) + b"\n"

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._line(
            {
                "model": model,
                "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": text},
                "done": False,
            }
        )

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._line(
            {
                "model": model,
                "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "total_duration": 1,
                "eval_count": total,
            }
        )

    def error_event(self) -> bytes:
        return b'{"error":"fake in-band error"}\n'

    def malformed(self) -> bytes:
        return b'{"message": {"content": "unterminated\n'

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}


class TGIFormat(WireFormat):
    path = "/generate_stream"

    def prompt(self, body: dict[str, Any]) -> str:
        return str(body.get("inputs") or "")

    def _event(self, token: dict[str, Any], generated: str | None = None) -> bytes:
        payload = {
            "index": token["id"],
            "token": token,
            "generated_text": generated,
            "details": None,
        }
        return sse(payload, space=False)  # TGI writes "data:" without the space

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        event = self._event({"id": index, "text": text, "logprob": -0.5, "special": False})
        if index == 1 and total >= 3:
            special = {"id": 0, "text": "<|special|>", "logprob": 0.0, "special": True}
            event += self._event(special)
        return event

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._event({"id": 2, "text": "</s>", "logprob": 0.0, "special": True}, text)

    def error_event(self) -> bytes:
        return sse({"error": "fake in-band error", "error_type": "generation"}, space=False)

    def malformed(self) -> bytes:
        return b'data:{"token": {"text": "unterminated\n\n'

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message, "error_type": "overloaded" if status == 429 else "generation"}


class AnthropicFormat(WireFormat):
    path = "/v1/messages"

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
            sse({"type": "message_start", "message": message}, event="message_start")
            + sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                event="content_block_start",
            )
            + sse({"type": "ping"}, event="ping")
        )

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return sse(delta, event="content_block_delta")

    def end(self, model: str, text: str, total: int) -> bytes:
        stop = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": total},
        }
        return (
            sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
            + sse(stop, event="message_delta")
            + sse({"type": "message_stop"}, event="message_stop")
        )

    def error_event(self) -> bytes:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return sse(error, event="error")

    def error_body(self, status: int, message: str) -> Any:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}


FORMATS: dict[str, WireFormat] = {
    f.path: f
    for f in (
        OpenAIChatFormat(),
        OpenAICompletionsFormat(),
        OllamaFormat(),
        TGIFormat(),
        AnthropicFormat(),
    )
}


class FakeUpstream:
    def __init__(self, *, tokens: int = 12, token_delay: float = 0.0) -> None:
        self.tokens = tokens
        self.token_delay = token_delay
        self.records: list[FakeRequest] = []
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._fault_counts: Counter[str] = Counter()
        self._changed: asyncio.Event | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        # Benchmarks open thousands of connections at once.
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def find(self, marker: str) -> list[FakeRequest]:
        return [record for record in list(self.records) if marker in record.prompt]

    async def wait_received(self, marker: str, timeout: float) -> FakeRequest:
        """The first request whose prompt contains marker, once it has arrived."""
        return await self._wait(marker, timeout, lambda record: True)

    async def wait_disconnected(self, marker: str, timeout: float) -> FakeRequest:
        """The request whose prompt contains marker, once its client has closed on it."""
        return await self._wait(marker, timeout, lambda r: r.disconnected_at is not None)

    async def _wait(self, marker: str, timeout: float, done: Any) -> FakeRequest:
        async with asyncio.timeout(timeout):
            while True:
                assert self._changed is not None
                changed = self._changed
                for record in self.find(marker):
                    if done(record):
                        return record
                await changed.wait()

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def take_fault(self, prompt: str, directives: Directives) -> bool:
        """Whether this request gets its fault (`@fail_times` limits how many do)."""
        if directives.fault is None:
            return False
        if directives.fail_times is None:
            return True
        self._fault_counts[prompt] += 1
        return self._fault_counts[prompt] <= directives.fail_times

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time (keep-alive)."""

    def __init__(self, fake: FakeUpstream) -> None:
        self._fake = fake
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._current: FakeRequest | None = None
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()
        self._closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._fake.connections_accepted += 1
        self._fake._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._send_simple(400, {"error": "bad request"})
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._fake._connections.discard(self)
        record = self._current
        if record is not None and record.finished_at is None:
            record.disconnected_at = time.monotonic()
            self._fake.notify()
        if self._task is not None:
            self._task.cancel()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode()
        path = httptools.parse_url(self._url).path.decode()
        body = bytes(self._body)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        wire = FORMATS.get(path)
        prompt = wire.prompt(payload) if wire and isinstance(payload, dict) else ""
        record = FakeRequest(method, path, self._headers, body, payload, prompt, time.monotonic())
        self._current = record
        self._fake.records.append(record)
        self._fake.notify()
        keep_alive = self._parser.should_keep_alive()
        self._task = asyncio.get_running_loop().create_task(self._respond(record, keep_alive))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # answering
    async def _respond(self, record: FakeRequest, keep_alive: bool) -> None:
        try:
            await self._answer(record)
        finally:
            if record.finished_at is None:
                record.finished_at = time.monotonic()
            self._fake.notify()
        if not keep_alive and self._transport is not None:
            self._transport.close()

    async def _answer(self, record: FakeRequest) -> None:
        wire = FORMATS.get(record.path)
        if record.method == "GET":
            if record.path == "/v1/models":
                self._send_simple(200, {"object": "list", "data": [{"id": "fake"}]})
            else:
                self._send_simple(404, {"error": "not found"})
            return
        if wire is None:
            self._send_simple(404, {"error": f"no such path {record.path}"})
            return
        if not isinstance(record.json, dict):
            self._send_simple(400, wire.error_body(400, "the body is not a JSON object"))
            return
        fake = self._fake
        directives = Directives.parse(record.prompt, fake.tokens, fake.token_delay)
        model = str(record.json.get("model") or "fake")
        if directives.model_missing and isinstance(wire, OllamaFormat):
            message = f'model "{model}" not found, try pulling it first'
            self._send_simple(404, wire.error_body(404, message))
            return
        fault = directives.fault if fake.take_fault(record.prompt, directives) else None
        if fault == "status":
            headers = {"Retry-After": directives.retry_after} if directives.retry_after else {}
            status = directives.status
            message = "fake upstream error"
            if directives.extra.get("echo_auth") == "1":  # as careless upstreams do
                credential = record.headers.get("authorization") or record.headers.get("x-api-key")
                message += f" (credential {credential})"
            self._send_simple(status, wire.error_body(status, message), headers)
            return
        if fault == "hang-headers":
            await asyncio.Future()
        await self._stream(record, wire, directives, fault, model)

    async def _stream(
        self, record: FakeRequest, wire: WireFormat, d: Directives, fault: str | None, model: str
    ) -> None:
        self._write(
            b"HTTP/1.1 200 OK\r\nContent-Type: "
            + wire.content_type
            + b"\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        if fault == "hang-before":
            await asyncio.Future()
        await self._chunk(wire.preamble(model), d.split)
        tokens = reply_tokens(record.prompt, d.tokens)
        for index, token in enumerate(tokens):
            if (
                index == d.after
                and fault is not None
                and await self._mid_stream_fault(record, wire, d, fault)
            ):
                return
            if d.delay:
                await asyncio.sleep(d.delay)
            await self._chunk(wire.token(index, token, model, d.tokens), d.split)
            if not d.delay and index % 64 == 63:
                await asyncio.sleep(0)  # let other connections (and disconnects) through
        if (
            d.after >= len(tokens)
            and fault is not None
            and await self._mid_stream_fault(record, wire, d, fault)
        ):
            return
        if fault != "no-end":
            await self._chunk(wire.end(model, "".join(tokens), d.tokens), d.split)
        self._write(b"0\r\n\r\n")
        record.finished_at = time.monotonic()

    async def _mid_stream_fault(
        self, record: FakeRequest, wire: WireFormat, d: Directives, fault: str
    ) -> bool:
        """Acts out a fault after `@after` tokens; True when the response is over."""
        if fault == "hang-mid":
            await asyncio.Future()
        if fault == "drop-mid":
            record.finished_at = time.monotonic()
            self.abort()
            return True
        if fault == "error-event":
            await self._chunk(wire.error_event(), d.split)
            self._write(b"0\r\n\r\n")
            record.finished_at = time.monotonic()
            return True
        if fault == "malformed":
            await self._chunk(wire.malformed(), d.split)
        return False

    async def _chunk(self, data: bytes, split: int) -> None:
        if not data:
            return
        if split <= 0:
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            for start in range(0, len(data), split):
                piece = data[start : start + split]
                self._write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await asyncio.sleep(0)
        if not self._writable.is_set():
            await self._writable.wait()
        if self._closed:
            raise asyncio.CancelledError

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _send_simple(
        self, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        body = orjson.dumps(payload)
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._write(("\r\n".join(head) + "\r\n\r\n").encode() + body)


async def serve_fake_upstream(host: str, port: int, *, tokens: int, token_delay: float) -> None:
    fake = FakeUpstream(tokens=tokens, token_delay=token_delay)
    await fake.start(host, port)
    print(f"fake upstream listening on http://{host}:{fake.port}", flush=True)
    try:
        await asyncio.Future()
    finally:
        await fake.aclose()
