"""Anthropic's Messages API shapes of one stream (SPEC §5i, issue 29): its named SSE events, or
one `message` object.

    event: message_start        {"type":"message_start","message":{... "content":[], "usage"}}
    event: content_block_start  {"index":0,"content_block":{"type":"thinking",...}}
    event: content_block_delta  {"index":0,"delta":{"type":"thinking_delta","thinking":"Hm"}}
    event: content_block_delta  {"index":0,"delta":{"type":"signature_delta",...}}  (anthropic)
    event: content_block_stop   {"index":0}
    event: content_block_start  {"index":1,"content_block":{"type":"text","text":""}}
    event: content_block_delta  {"index":1,"delta":{"type":"text_delta","text":"Hel"}}
    event: content_block_stop   {"index":1}
    event: content_block_start  {"index":2,"content_block":{"type":"tool_use",...,"input":{}}}
    event: content_block_delta  {"index":2,"delta":{"type":"input_json_delta",...}}
    event: content_block_stop   {"index":2}
    event: message_delta        {"delta":{"stop_reason":"tool_use",...},"usage":{...}}
    event: message_stop
    event: ping                 while waiting

A block opens with the first part of its kind and closes when a part of another kind comes (a
signature closes its thinking block: Anthropic's end of one), so blocks never overlap and their
indexes count up from 0 (the SDKs index their content by them). A call's block is open while
its pieces come; pieces of another call, and any other part, are held until the answer ends
(then each held call is written whole, and the held parts after): whatever order an upstream
interleaves them in, no delta ever names a block that is closed or not yet started. Upstreams
stream calls one after another, last, so nothing is held in practice.

The proxy's input token count comes only with the upstream's usage at the end: `message_start`
says 0 and `message_delta` carries the count (the SDKs take `input_tokens` from it). A failure
after the commit point is one `error` event, as Anthropic sends one mid-stream: the SDKs raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from proxy.errors import UpstreamProtocolError, anthropic_error
from proxy.formats.encoders import Encoder, OutputFormat
from proxy.parts import Part, Reasoning, ReasoningSignature, ToolCallDelta
from proxy.values import Done, Ending, Failed, Usage

# The proxy's finish reasons in Anthropic's words; an upstream that said nothing stays null
# (as on the OpenAI route: the proxy does not make a reason up).
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "tool_calls": "end_turn",  # said without a call: nothing to use
    "other": "end_turn",
}
_THINKING_START = {"type": "thinking", "thinking": "", "signature": ""}
_TEXT_START = {"type": "text", "text": ""}


@dataclass(slots=True, frozen=True)
class MessageMeta:
    """What `message_start` and the whole message repeat."""

    id: str
    model: str

    def envelope(self, usage: Usage | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(usage),
        }


def stop_reason(done: Done, called: bool) -> str | None:
    if called and done.finish_reason != "length":
        return "tool_use"
    if done.at_stop_sequence:
        return "stop_sequence"
    return _STOP_REASONS.get(done.finish_reason or "")


def usage_json(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage: both counts are required, so one not reported is 0."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": usage.prompt_tokens or 0,
        "output_tokens": usage.completion_tokens or 0,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps({"type": name, **data}))


def error_event(failed: Failed) -> bytes:
    """A failure after the commit point, as Anthropic's stream reports one."""
    return b"event: error\ndata: %s\n\n" % orjson.dumps(anthropic_error(502, failed.message))


class MessagesEncoder:
    """Anthropic's event stream of one message (see the module's docstring)."""

    __slots__ = ("_blocks", "_called", "_held_calls", "_held_parts", "_live_call", "_meta", "_open")
    keepalive = b'event: ping\ndata: {"type":"ping"}\n\n'

    def __init__(self, meta: MessageMeta) -> None:
        self._meta = meta
        self._blocks = 0  # blocks started; the open one is the last
        self._open = ""  # the open block's type ("": none)
        self._live_call: int | None = None  # the call whose block is open
        self._held_calls: dict[int, ToolCallDelta] = {}  # other calls, whole so far
        self._held_parts: list[Part] = []  # other parts that came while a call was open
        self._called = False

    def opening(self) -> bytes:
        return _event("message_start", {"message": self._meta.envelope()})

    def delta(self, text: str) -> bytes:
        if self._live_call is not None:
            self._held_parts.append(text)
            return b""
        return self._enter("text", _TEXT_START) + self._block_delta("text_delta", "text", text)

    def reasoning(self, text: str) -> bytes:
        if self._live_call is not None:
            self._held_parts.append(Reasoning(text))
            return b""
        start = self._enter("thinking", _THINKING_START)
        return start + self._block_delta("thinking_delta", "thinking", text)

    def signature(self, part: ReasoningSignature) -> bytes:
        if self._live_call is not None:
            self._held_parts.append(part)
            return b""
        start = self._enter("thinking", _THINKING_START)
        sealed = self._block_delta("signature_delta", "signature", part.signature)
        return start + sealed + self._close()

    def tool_call(self, call: ToolCallDelta) -> bytes:
        self._called = True
        if call.index == self._live_call:
            return self._arguments(call.arguments)
        if self._live_call is not None:
            held = self._held_calls.get(call.index)
            if held is None:
                self._held_calls[call.index] = call
            else:
                self._held_calls[call.index] = replace(
                    held, arguments=held.arguments + call.arguments
                )
            return b""
        start = self._close() + self._start(_call_block(call))
        self._open, self._live_call = "tool_use", call.index
        return start + self._arguments(call.arguments)

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return error_event(ending)
        closing = self._close()
        for part in self._held_parts:
            closing += _encode(self, part)
        closing += self._close()
        delta = {"stop_reason": stop_reason(ending, self._called), "stop_sequence": None}
        usage = usage_json(ending.usage)
        if ending.usage is None or ending.usage.prompt_tokens is None:
            del usage["input_tokens"]  # optional here: the SDKs keep message_start's
        return (
            closing
            + _event("message_delta", {"delta": delta, "usage": usage})
            + _event("message_stop", {})
        )

    def _enter(self, kind: str, block: dict[str, Any]) -> bytes:
        if self._open == kind:
            return b""
        start = self._close() + self._start(block)
        self._open = kind
        return start

    def _start(self, block: dict[str, Any]) -> bytes:
        self._blocks += 1
        return _event("content_block_start", {"index": self._blocks - 1, "content_block": block})

    def _block_delta(self, kind: str, name: str, value: str) -> bytes:
        delta = {"type": kind, name: value}
        return _event("content_block_delta", {"index": self._blocks - 1, "delta": delta})

    def _arguments(self, fragment: str) -> bytes:
        return self._block_delta("input_json_delta", "partial_json", fragment) if fragment else b""

    def _close(self) -> bytes:
        """The open block's stop; after a call's, each held call whole."""
        if not self._open:
            return b""
        closing = _event("content_block_stop", {"index": self._blocks - 1})
        self._open, self._live_call = "", None
        for call in self._held_calls.values():
            closing += self._start(_call_block(call)) + self._arguments(call.arguments)
            closing += _event("content_block_stop", {"index": self._blocks - 1})
        self._held_calls.clear()
        return closing


def _call_block(call: ToolCallDelta) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id or "", "name": call.name or "", "input": {}}


def _encode(encoder: MessagesEncoder, part: Part) -> bytes:
    if isinstance(part, str):
        return encoder.delta(part)
    if isinstance(part, Reasoning):
        return encoder.reasoning(part.text)
    if isinstance(part, ReasoningSignature):
        return encoder.signature(part)
    return encoder.tool_call(part)


@dataclass(slots=True)
class WholeMessage:
    """A not-streamed answer's content blocks, gathered from its parts in the blocks the
    encoder makes of them: the parts before the first call, the calls, the parts after them.
    A call's input stays JSON text until the end. A Gathering (proxy/opening.py)."""

    meta: MessageMeta
    before: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    after: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> list[dict[str, Any]]:
        return [*self.before, *self.calls.values(), *self.after]

    def whole(self, done: Done) -> dict[str, Any]:
        return message_json(self.meta, self, done)

    def add(self, part: Part) -> None:
        blocks = self.after if self.calls else self.before
        last = blocks[-1] if blocks else {}
        if isinstance(part, str):
            if last.get("type") == "text":
                last["text"] += part
            else:
                blocks.append({"type": "text", "text": part})
        elif isinstance(part, Reasoning | ReasoningSignature):
            if last.get("type") != "thinking" or last["signature"]:
                last = {**_THINKING_START}
                blocks.append(last)
            if isinstance(part, Reasoning):
                last["thinking"] += part.text
            else:
                last["signature"] = part.signature
        elif part.index in self.calls:
            self.calls[part.index]["input"] += part.arguments
        else:
            self.calls[part.index] = {**_call_block(part), "input": part.arguments}


def message_json(meta: MessageMeta, whole: WholeMessage, done: Done) -> dict[str, Any]:
    """The whole answer as one `message` (`stream` false or absent)."""
    for block in whole.calls.values():
        block["input"] = _call_input(block["input"])
    message = meta.envelope(done.usage)
    message["content"] = whole.content
    message["stop_reason"] = stop_reason(done, bool(whole.calls))
    return message


def _call_input(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("upstream sent a tool call whose input is not a JSON object")
    return value


def _default_events(offset: int, message_id: str) -> Encoder:
    return MessagesEncoder(MessageMeta(message_id, ""))


MESSAGE_EVENTS = OutputFormat(
    "anthropic-messages", "text/event-stream", "text/event-stream; charset=utf-8", _default_events
)


def message_events(meta: MessageMeta) -> OutputFormat:
    """The events of this message: what its request named (its model)."""

    def encoder(offset: int, message_id: str) -> Encoder:
        return MessagesEncoder(meta)

    return replace(MESSAGE_EVENTS, new_encoder=encoder)
