"""The framings of one stream of text deltas: raw text, SSE, NDJSON, the AI SDK's UI stream.

An encoder renders one stream, in order: `opening()` at the commit point, `delta(text)` per
text delta, then `end(ending)` once. It counts the characters (code points) it has rendered,
starting from the offset it was made with, so a replay from an offset numbers its events like
the original stream. `keepalive` is what to send while nothing else is (empty: nothing).

Offsets are in Unicode code points, the unit of Python's `len` (a JavaScript client counts
them with `[...text].length`, not `text.length`). An SSE delta's `id:` is the offset of the
*end* of its text, so a `Last-Event-ID` of N means "I have the first N characters" and a
resume continues with character N, exactly as `?offset=N` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from proxy.values import Done, Ending, Failed


class Encoder(Protocol):
    keepalive: bytes

    def opening(self) -> bytes: ...

    def delta(self, text: str) -> bytes: ...

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

    def end(self, ending: Ending) -> bytes | None:
        return b"" if isinstance(ending, Done) else None


class _CountingEncoder:
    """An encoder that numbers its deltas by the character offset of their end."""

    __slots__ = ("offset",)

    def __init__(self, offset: int = 0, message_id: str = "") -> None:
        self.offset = offset

    def opening(self) -> bytes:
        return b""


class SSEEncoder(_CountingEncoder):
    """`event: delta` with `id:` (end offset) and `data: {"text": ...}`; `done`; `error`."""

    __slots__ = ()
    keepalive = b": ping\n\n"

    def delta(self, text: str) -> bytes:
        self.offset += len(text)
        return b"event: delta\nid: %d\ndata: %s\n\n" % (self.offset, orjson.dumps({"text": text}))

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return b"event: error\ndata: %s\n\n" % orjson.dumps(ending.error)
        data = orjson.dumps(ending.as_json())
        return b"event: done\nid: %d\ndata: %s\n\n" % (self.offset, data)


class NDJSONEncoder(_CountingEncoder):
    """The SSE events as JSON lines: `{"event": "delta", "offset": N, "text": ...}`, `done`,
    `error` (with the error body's `error` object), and `{"event": "ping"}` keep-alives."""

    __slots__ = ()
    keepalive = b'{"event":"ping"}\n'

    def delta(self, text: str) -> bytes:
        self.offset += len(text)
        return orjson.dumps({"event": "delta", "offset": self.offset, "text": text}) + b"\n"

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
_TEXT_PART_ID = "text-0"


def _ui_part(part: Mapping[str, Any]) -> bytes:
    return b"data: %s\n\n" % orjson.dumps(part)


class UIMessageEncoder:
    """The AI SDK UI message stream (SSE `data:` JSON parts, protocol v1, `ai` 5 to 7).

    start (messageId), start-step, text-start, text-delta..., text-end, finish-step, finish,
    `data: [DONE]`. A failure is one `error` part (`errorText`), so `useChat` shows an error
    rather than a finished message; no `[DONE]` follows it. The text part opens with the
    first delta, so an empty answer has no empty text part. Usage, when known, travels as
    the message's metadata (`finish.messageMetadata.usage`).
    """

    __slots__ = ("_message_id", "_text_open")
    keepalive = b": ping\n\n"

    def __init__(self, offset: int = 0, message_id: str = "") -> None:
        self._message_id = message_id
        self._text_open = False

    def opening(self) -> bytes:
        start: dict[str, str] = {"type": "start"}
        if self._message_id:
            start["messageId"] = self._message_id
        return _ui_part(start) + _ui_part({"type": "start-step"})

    def delta(self, text: str) -> bytes:
        part = _ui_part({"type": "text-delta", "id": _TEXT_PART_ID, "delta": text})
        if self._text_open:
            return part
        self._text_open = True
        return _ui_part({"type": "text-start", "id": _TEXT_PART_ID}) + part

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return _ui_part({"type": "error", "errorText": ending.message})
        closing = _ui_part({"type": "text-end", "id": _TEXT_PART_ID}) if self._text_open else b""
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

    def encoder(self, offset: int = 0, message_id: str = "") -> Encoder:
        return self.new_encoder(offset, message_id)


TEXT = OutputFormat("text", "text/plain", "text/plain; charset=utf-8", TextEncoder)
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
