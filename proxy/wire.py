"""Incremental decoders for upstream byte streams: bytes in, complete events out.

Both work on bytes and split lines *before* decoding: UTF-8 never uses the bytes of CR or LF
inside a multi-byte sequence, so a complete line is always complete UTF-8, whatever the TCP
reads looked like. That is exactly what an incremental decoder would give, minus the copy:
event data stays bytes and goes straight to the JSON parser, which decodes (and validates)
it once. `str.splitlines` and httpx's `aiter_lines` would also split on U+2028, U+0085 and
form feeds; `bytes.splitlines` splits on CR, LF and CRLF only, as the SSE grammar says.
"""

from __future__ import annotations

from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    event: str
    data: bytes


class SSEDecoder:
    """The WHATWG event-stream interpretation, fed one TCP read at a time.

    https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
    """

    __slots__ = ("_data", "_event", "_has_data", "_line_tail", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._line_tail = b""
        self._skip_lf = False  # the last read ended in CR: a leading LF completes a CRLF
        self._started = False
        self._event = ""
        self._data: list[bytes] = []
        self._has_data = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if self._line_tail:
            chunk = self._line_tail + chunk
        if not chunk:
            return []
        lines = chunk.splitlines(keepends=True)
        last = lines[-1]
        if last[-1] in b"\r\n":
            self._line_tail = b""
            self._skip_lf = last[-1] == 0x0D
        else:
            self._line_tail = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._process_line(line.rstrip(b"\r\n"))
            if event is not None:
                events.append(event)
        return events

    def _process_line(self, line: bytes) -> ServerSentEvent | None:
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[3:]
        if not line:
            return self._dispatch()
        if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
            return None
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
            self._has_data = True
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" steer browser reconnection, which a proxy never does; unknown
        # fields are ignored by the spec.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data, has_data = self._event, self._data, self._has_data
        self._event = ""
        if not has_data:
            return None
        self._data = []
        self._has_data = False
        return ServerSentEvent(event or "message", data[0] if len(data) == 1 else b"\n".join(data))


class NDJSONDecoder:
    """Newline-delimited JSON: one value a line; blank lines skipped, CRLF tolerated."""

    __slots__ = ("_line_tail",)

    def __init__(self) -> None:
        self._line_tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._line_tail:
            chunk = self._line_tail + chunk
        *lines, self._line_tail = chunk.split(b"\n")
        return [line for line in lines if line.strip()]

    def flush(self) -> list[bytes]:
        """The last line, when the stream ends without a final newline."""
        tail, self._line_tail = self._line_tail, b""
        return [tail] if tail.strip() else []
