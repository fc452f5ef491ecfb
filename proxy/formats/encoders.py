"""The framings of one stream of parts: raw text, SSE, NDJSON, the AI SDK's UI stream.

An encoder renders one stream, in order: `opening()` at the commit point, a method per kind of
part (proxy/parts.py) as each comes: `delta(text)`, `reasoning(text)`; then `end(ending)` once.
A format that does not carry a kind renders it as b"" (raw text carries the answer's text
alone). It counts the characters (code points) it has rendered, starting from the offset it
was made with, so a replay from an offset numbers its events like the original stream.
`keepalive` is what to send while nothing else is (empty: nothing).

Offsets are in Unicode code points, the unit of Python's `len` (a JavaScript client counts
them with `[...text].length`, not `text.length`), and count the characters of reasoning and
text in the stream's order (tool calls are not carried on the routes that offer these formats,
and count nothing): one position in the stream, whatever kind came
before it. An SSE event's `id:` is the offset of the *end* of its part, so a `Last-Event-ID`
of N means "I have the first N characters" and a resume continues with character N, exactly
as `?offset=N` does. Raw text counts its own text alone (its client sees nothing else): a
raw-text resume's `?offset=N` is N characters of the answer (proxy/resume/items.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from proxy.parts import ReasoningSignature, ToolCallDelta
from proxy.values import Done, Ending, Failed


class Encoder(Protocol):
    keepalive: bytes

    def opening(self) -> bytes: ...

    def delta(self, text: str) -> bytes: ...

    def reasoning(self, text: str) -> bytes: ...

    def tool_call(self, call: ToolCallDelta) -> bytes: ...

    def signature(self, part: ReasoningSignature) -> bytes:
        """A reasoning signature: written by the Messages API alone (b"" elsewhere)."""
        ...

    def end(self, ending: Ending) -> bytes | None:
        """The closing bytes; None when the format cannot say "failed" and must abort."""
        ...


class TextEncoder:
    """The raw text of SPEC §1: no framing; a failure aborts the connection."""

    __slots__ = ()
    keepalive = b""

    def __init__(self, offset: int = 0, message_id: str = "") -> None:
        pass

    def opening(self) -> bytes:
        return b""

    def delta(self, text: str) -> bytes:
        return text.encode()

    def reasoning(self, text: str) -> bytes:
        return b""

    def tool_call(self, call: ToolCallDelta) -> bytes:
        return b""

    def signature(self, part: ReasoningSignature) -> bytes:
        return b""

    def end(self, ending: Ending) -> bytes | None:
        return b"" if isinstance(ending, Done) else None


class _CountingEncoder:
    """An encoder that numbers its deltas by the character offset of their end."""

    __slots__ = ("offset",)

    def __init__(self, offset: int = 0, message_id: str = "") -> None:
        self.offset = offset

    def opening(self) -> bytes:
        return b""

    def tool_call(self, call: ToolCallDelta) -> bytes:
        return b""  # the routes of these formats take no tools (docs/api.md)

    def signature(self, part: ReasoningSignature) -> bytes:
        return b""


class SSEEncoder(_CountingEncoder):
    """`event: delta` (text) and `event: reasoning`, each with `id:` (end offset) and
    `data: {"text": ...}`; `done`; `error`."""

    __slots__ = ()
    keepalive = b": ping\n\n"

    def delta(self, text: str) -> bytes:
        self.offset += len(text)
        return b"event: delta\nid: %d\ndata: %s\n\n" % (self.offset, orjson.dumps({"text": text}))

    def reasoning(self, text: str) -> bytes:
        self.offset += len(text)
        data = orjson.dumps({"text": text})
        return b"event: reasoning\nid: %d\ndata: %s\n\n" % (self.offset, data)

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return b"event: error\ndata: %s\n\n" % orjson.dumps(ending.error)
        data = orjson.dumps(ending.as_json())
        return b"event: done\nid: %d\ndata: %s\n\n" % (self.offset, data)


class NDJSONEncoder(_CountingEncoder):
    """The SSE events as JSON lines: `{"event": "delta", "offset": N, "text": ...}`,
    `{"event": "reasoning", ...}` alike, `done`, `error` (with the error body's `error`
    object), and `{"event": "ping"}` keep-alives."""

    __slots__ = ()
    keepalive = b'{"event":"ping"}\n'

    def delta(self, text: str) -> bytes:
        self.offset += len(text)
        return orjson.dumps({"event": "delta", "offset": self.offset, "text": text}) + b"\n"

    def reasoning(self, text: str) -> bytes:
        self.offset += len(text)
        return orjson.dumps({"event": "reasoning", "offset": self.offset, "text": text}) + b"\n"

    def end(self, ending: Ending) -> bytes:
        line: dict[str, Any]
        if isinstance(ending, Failed):
            line = {"event": "error", **ending.error}
        else:
            line = {"event": "done", "offset": self.offset, **ending.as_json()}
        return orjson.dumps(line) + b"\n"


# The AI SDK's finish reasons that `ai` 5, 6 and 7 all accept ("unknown" is 5's alone,
# "interrupted" 7's alone); an unknown reason is left out, which all of them allow.
_UI_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "other": "other",
}


def _ui_part(part: Mapping[str, Any]) -> bytes:
    return b"data: %s\n\n" % orjson.dumps(part)


class UIMessageEncoder:
    """The AI SDK UI message stream (SSE `data:` JSON parts, protocol v1, `ai` 5 to 7).

    start (messageId), start-step, then a part per run of one kind: reasoning-start,
    reasoning-delta..., reasoning-end; text-start, text-delta..., text-end; then finish-step,
    finish, `data: [DONE]`. A failure is one `error` part (`errorText`), so `useChat` shows an
    error rather than a finished message; no `[DONE]` follows it. A part opens with its first
    delta, so an empty answer has no empty text part, and closes when a part of another kind
    comes (ids `text-0`, `reasoning-1`...: one count for both kinds). Usage, when known,
    travels as the message's metadata (`finish.messageMetadata.usage`).
    """

    __slots__ = ("_message_id", "_open", "_opened")
    keepalive = b": ping\n\n"

    def __init__(self, offset: int = 0, message_id: str = "") -> None:
        self._message_id = message_id
        self._open = ""  # the id of the part open now ("": none)
        self._opened = 0

    def opening(self) -> bytes:
        start: dict[str, str] = {"type": "start"}
        if self._message_id:
            start["messageId"] = self._message_id
        return _ui_part(start) + _ui_part({"type": "start-step"})

    def delta(self, text: str) -> bytes:
        return self._part("text", text)

    def reasoning(self, text: str) -> bytes:
        return self._part("reasoning", text)

    def tool_call(self, call: ToolCallDelta) -> bytes:
        return b""  # POST /v1/chat takes no tools (docs/api.md)

    def signature(self, part: ReasoningSignature) -> bytes:
        return b""

    def _part(self, kind: str, delta: str) -> bytes:
        opening = b""
        if not self._open.startswith(kind):
            opening = self._close()
            self._open = f"{kind}-{self._opened}"
            self._opened += 1
            opening += _ui_part({"type": f"{kind}-start", "id": self._open})
        return opening + _ui_part({"type": f"{kind}-delta", "id": self._open, "delta": delta})

    def _close(self) -> bytes:
        if not self._open:
            return b""
        kind = self._open.partition("-")[0]
        closing = _ui_part({"type": f"{kind}-end", "id": self._open})
        self._open = ""
        return closing

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return _ui_part({"type": "error", "errorText": ending.message})
        closing = self._close()
        finish: dict[str, Any] = {"type": "finish"}
        reason = _UI_FINISH_REASONS.get(ending.finish_reason or "")
        if reason is not None:
            finish["finishReason"] = reason
        if ending.usage is not None:
            finish["messageMetadata"] = {"usage": ending.usage.as_json()}
        return closing + _ui_part({"type": "finish-step"}) + _ui_part(finish) + b"data: [DONE]\n\n"


EncoderFactory = Callable[[int, str], Encoder]


@dataclass(slots=True, frozen=True)
class OutputFormat:
    """One representation of a stream: its Content-Type, extra headers and encoder."""

    name: str
    media_type: str
    content_type: str
    new_encoder: EncoderFactory
    headers: Mapping[str, str] = field(default_factory=dict)
    # It carries the answer's text alone: its commit point is the first text (SPEC §5g).
    text_only: bool = False

    def encoder(self, offset: int = 0, message_id: str = "") -> Encoder:
        return self.new_encoder(offset, message_id)


TEXT = OutputFormat("text", "text/plain", "text/plain; charset=utf-8", TextEncoder, text_only=True)
SSE = OutputFormat("sse", "text/event-stream", "text/event-stream; charset=utf-8", SSEEncoder)
NDJSON = OutputFormat(
    "ndjson", "application/x-ndjson", "application/x-ndjson; charset=utf-8", NDJSONEncoder
)
UI_MESSAGE_STREAM = OutputFormat(
    "ui-message-stream",
    "text/event-stream",
    "text/event-stream; charset=utf-8",
    UIMessageEncoder,
    # The AI SDK's name for the protocol and its version.
    {"x-vercel-ai-ui-message-stream": "v1"},
)

# The representations POST /v1/stream offers, in the server's order of preference.
STREAM_FORMATS = (TEXT, SSE, NDJSON)
