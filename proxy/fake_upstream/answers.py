"""How the fake answers one request: a probe's, an error status, or a streamed reply with the
fault its prompt asked for, written as chunked HTTP/1.1 onto the connection.

A reply that thinks sends its reasoning tokens first, paced as its text, then its text; a
mid-stream fault comes in the text (`@after` counts text tokens), and the request's max tokens
count both, as a real server's do: a reply capped inside its thinking has no text.

A reply that calls tools (`@call`, to a request that has tools) sends its few words first, if
any, then its calls' arguments fragment by fragment, paced as tokens; a mid-stream fault comes
among the fragments (`@after` counts them). A request whose last turn carries tool results
gets a text that says what they were (`calls.tool_answer_text`), whole, whatever `@tokens` says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from http.client import responses as REASON_PHRASES
from typing import Any, Protocol

import orjson

from proxy.fake_upstream.calls import (
    TEXT_BEFORE_CALL,
    ToolCall,
    fragments_of,
    plan_calls,
    tool_answer_text,
)
from proxy.fake_upstream.directives import MID_STREAM_FAULTS, Directives, Fault, FaultSchedule
from proxy.fake_upstream.formats import FORMATS, OllamaFormat, WireFormat
from proxy.fake_upstream.formats.base import Usage
from proxy.fake_upstream.replies import Reply, prompt_tokens, thoughts
from proxy.fake_upstream.request import FakeRequest


class Connection(Protocol):
    """What an answer writes to: the server's connection to one client."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Returns once the transport wants more: a slow reader slows the reply down."""

    def abort(self) -> None:
        """Drops the connection at once, unflushed."""


async def forever() -> None:
    """Hangs until cancelled, which is how a client leaving ends a hanging reply."""
    await asyncio.get_running_loop().create_future()


class Answer:
    """Decides the answer to one request: a probe's, an error, or a stream."""

    def __init__(
        self,
        connection: Connection,
        record: FakeRequest,
        keep_alive: bool,
        *,
        tokens: int | None,
        token_delay: float,
        faults: FaultSchedule,
        slow_start: float = 0.0,
    ) -> None:
        self._slow_start = slow_start
        self._connection = connection
        self._record = record
        self._keep_alive = keep_alive
        self._tokens = tokens
        self._token_delay = token_delay
        self._faults = faults

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
        record = self._record
        directives = Directives.parse(record.prompt, tokens=self._tokens, delay=self._token_delay)
        model = body.get("model")
        model = model if isinstance(model, str) and model else "fake"
        if directives.model_missing and isinstance(wire, OllamaFormat):
            message = f'model "{model}" not found, try pulling it first'
            self._send_json(404, wire.error_body(404, message))
            return
        fault = directives.fault if self._faults.takes_fault(record.prompt, directives) else None
        if fault == "status":
            self._send_error_status(wire, directives)
            return
        if fault == "hang-headers":
            await forever()
        usage = directives.usage and wire.wants_usage(body)
        limit = None if directives.ignore_max_tokens else wire.max_tokens(body)
        thinker = wire.with_reasoning(directives.reasoning_field)
        thinking = directives.thinking_tokens(wire.reasoning_asked(body)) if thinker else 0
        wire = thinker if thinker is not None and thinking else wire
        reply, calls = self._content(wire, body, directives)
        if calls:
            wire = wire.with_calls(text=reply.total > 0)
        stream = _Stream(self._connection, record, wire, directives, fault, model, reply, calls)
        stream.slow_start = self._slow_start
        await stream.run(self._keep_alive, reports_usage=usage, max_tokens=limit, thinking=thinking)

    def _content(
        self, wire: WireFormat, body: dict[str, Any], directives: Directives
    ) -> tuple[Reply, tuple[ToolCall, ...]]:
        """What the reply says, and the calls it makes: an answer to tool results, calls (and
        what comes before them), or the text its prompt asks for."""
        prompt = self._record.prompt
        results = wire.tool_results(body)
        if results is not None:
            return Reply.saying(tool_answer_text(results)), ()
        calls = plan_calls(prompt, wire.tool_names(body), directives) if directives.call else ()
        if calls:
            return Reply.saying(TEXT_BEFORE_CALL if directives.text_before_call else ""), calls
        return Reply(prompt, directives.text, directives.tokens), ()

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


def cap(reply: Reply, thinking: int, max_tokens: int | None) -> tuple[int, bool]:
    """The reasoning tokens left under max tokens (reply's text cut to fit after them), and
    whether the reply stops there."""
    if max_tokens is None:
        return thinking, False
    capped = max_tokens < thinking + reply.total
    thinking = min(thinking, max_tokens)
    reply.total = min(reply.total, max_tokens - thinking)
    return thinking, capped


class _Stream:
    """One streamed 200 reply: reasoning, then text token by token or calls fragment by
    fragment, with the fault its prompt asked for."""

    def __init__(
        self,
        connection: Connection,
        record: FakeRequest,
        wire: WireFormat,
        directives: Directives,
        fault: Fault | None,
        model: str,
        reply: Reply,
        calls: tuple[ToolCall, ...],
    ) -> None:
        self._connection = connection
        self._record = record
        self._wire = wire
        self._directives = directives
        self._fault = fault
        self._model = model
        self._reply = reply
        self._calls = calls
        self._fragments = fragments_of(calls)
        self.slow_start = 0.0  # seconds between the response head and the first part

    async def run(
        self, keep_alive: bool, *, reports_usage: bool, max_tokens: int | None, thinking: int
    ) -> None:
        wire, fault, reply = self._wire, self._fault, self._reply
        thinking, capped = cap(reply, thinking, max_tokens)
        if capped:
            self._fragments = []  # cut before its calls: calls that start are not cut
        completion = thinking + reply.total + len(self._fragments)
        prompt = self._record.prompt
        usage = Usage(prompt_tokens(prompt), completion, thinking) if reports_usage else None
        self._connection.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %b\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n%b\r\n"
            % (wire.content_type, b"" if keep_alive else b"Connection: close\r\n")
        )
        if fault == "hang-before":
            await forever()
        if self.slow_start:
            await asyncio.sleep(self.slow_start)
        await self._send(wire.preamble(self._model, usage))
        if thinking:
            await self._send_reasoning(thinking)
        if not await self._send_answer():
            return
        if fault != "no-end":
            text = "".join(reply.tokens(0, reply.total))
            await self._send(wire.end(self._model, text, reply.total, usage, capped=capped))
        self._finish()

    async def _send_answer(self) -> bool:
        """The text, or the text before the calls and then the calls, with the fault the
        prompt asked for; whether the reply goes on to its end."""
        if not self._fragments:
            return await self._send_faulted(
                self._send_tokens, self._reply.total, self._wire.epilogue()
            )
        await self._send_tokens(0, self._reply.total)
        await self._send(self._wire.epilogue())
        return await self._send_faulted(self._send_fragments, len(self._fragments), b"")

    async def _send_faulted(
        self, send: Callable[[int, int], Awaitable[None]], total: int, closing: bytes
    ) -> bool:
        """Units 0 to total, `@after` of them before a mid-stream fault, then closing."""
        fault = self._fault if self._fault in MID_STREAM_FAULTS else None
        after = min(self._directives.after, total) if fault else total
        await send(0, after)
        if fault and not await self._act_out(fault):
            return False
        await send(after, total)
        await self._send(closing)
        return True

    async def _send_reasoning(self, count: int) -> None:
        """The reasoning tokens, with `@think_gap`'s pause after the first half of them."""
        frame, model = self._wire.reasoning_token, self._model
        half = (count + 1) // 2
        await self._send_paced(frame(i, text, model) for i, text in thoughts(0, half))
        if self._directives.think_gap:
            await asyncio.sleep(self._directives.think_gap)
        await self._send_paced(frame(i, text, model) for i, text in thoughts(half, count))
        await self._send(self._wire.reasoning_end())

    async def _send_tokens(self, start: int, stop: int) -> None:
        token, model, total = self._wire.token, self._model, self._reply.total
        texts = enumerate(self._reply.tokens(start, stop), start)
        await self._send_paced(token(index, text, model, total) for index, text in texts)

    async def _send_fragments(self, start: int, stop: int) -> None:
        frame, calls, model = self._wire.call_fragment, self._calls, self._model
        await self._send_paced(frame(calls, f, model) for f in self._fragments[start:stop])

    async def _send_paced(self, frames: Iterator[bytes]) -> None:
        """Each frame after `@delay`; a frame is made only when its turn comes."""
        delay = self._directives.delay
        for count, frame in enumerate(frames, 1):
            if delay:
                await asyncio.sleep(delay)
            elif count % 64 == 0:
                # A fast reader never fills the write buffer, so without this a long reply
                # would hold the loop, and the news of its client leaving, until it ends.
                await asyncio.sleep(0)
            await self._send(frame)

    async def _act_out(self, fault: str) -> bool:
        """A fault after `@after` tokens; whether the reply goes on after it."""
        if fault == "hang-mid":
            await forever()
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
