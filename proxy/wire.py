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

from proxy.errors import UpstreamProtocolError

_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = (0x0A, 0x0D)


class ServerSentEvent(NamedTuple):
    event: str
    data: bytes


# A NamedTuple's own constructor is a Python function; tuple's makes the same value in C
# (one event per delta, several per read at full speed).
_new_event = tuple.__new__


def _too_large(what: str, limit: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"upstream sent {what} over {limit} bytes (PROXY_MAX_EVENT_BYTES)")


class _TooLarge(Exception):
    """A line or an event over the limit, met while decoding one read."""


class _Lines:
    """Reads cut after their last line end and joined to the unterminated reads before
    them, so every byte is copied and scanned a bounded number of times."""

    __slots__ = ("_tail", "tail_size")

    def __init__(self) -> None:
        self._tail: list[bytes] = []  # the reads since the last line end
        self.tail_size = 0

    def take(self, chunk: bytes, end: int) -> bytes:
        """The whole lines up to chunk[end] (its last line end; -1 for none), with their
        terminators; the rest of chunk is kept for the next read."""
        if end < 0:
            if chunk:
                self._tail.append(chunk)
                self.tail_size += len(chunk)
            return b""
        complete = chunk[: end + 1]
        if self._tail:
            self._tail.append(complete)
            complete = b"".join(self._tail)
        rest = chunk[end + 1 :]
        self._tail = [rest] if rest else []
        self.tail_size = len(rest)
        return complete

    def rest(self) -> bytes:
        tail = b"".join(self._tail)
        self.clear()
        return tail

    def clear(self) -> None:
        self._tail = []
        self.tail_size = 0


class SSEDecoder:
    """The WHATWG event-stream interpretation, fed one TCP read at a time.

    https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

    Memory stays bounded and work linear whatever the upstream sends: an unterminated line
    is kept as the reads that brought it, scanned once, and a line, or the data of one
    event, over `max_event_bytes` ends decoding with `failure` set; `feed` still returns the
    events completed before it. Both rules hold whatever the split of the bytes.
    """

    __slots__ = (
        "_data",
        "_event",
        "_event_size",
        "_has_data",
        "_limit",
        "_lines",
        "_skip_lf",
        "_started",
        "failure",
    )

    def __init__(self, max_event_bytes: int) -> None:
        self._limit = max_event_bytes
        self._lines = _Lines()
        self._skip_lf = False  # the last read ended in CR: a leading LF completes a CRLF
        self._started = False
        self._event = ""
        self._data: list[bytes] = []
        self._event_size = 0
        self._has_data = False
        self.failure: UpstreamProtocolError | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self.failure is not None:
            return []
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        last = len(chunk) - 1
        if last >= 0 and chunk[last] in _LINE_ENDS:  # the usual read: whole lines
            end = last
        else:
            end = chunk.rfind(b"\n")
            end = max(end, chunk.rfind(b"\r", end + 1))  # a CR after the last LF, if any
        limit = self._limit
        if end == last and not self._lines.tail_size:  # the usual read: whole events
            complete = chunk
        else:
            complete = self._lines.take(chunk, end)
        self._skip_lf = end == last and end >= 0 and chunk[end] == 0x0D
        events: list[ServerSentEvent] = []
        # Only a read longer than the limit can hold a line longer than it.
        long_lines = len(complete) > limit
        process_line = self._process_line
        try:
            for line in complete.splitlines():
                if long_lines and len(line) > limit:
                    raise _TooLarge
                event = process_line(line)
                if event is not None:
                    events.append(event)
        except _TooLarge:
            self._fail()
            return events
        if self._lines.tail_size > limit:
            self._fail()
        return events

    def _fail(self) -> None:
        self.failure = _too_large("an event", self._limit)
        self._lines.clear()
        self._data = []

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
            self._event_size += len(value)
            if self._event_size > self._limit:
                raise _TooLarge
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
        self._event_size = 0
        self._has_data = False
        fields = (event or "message", data[0] if len(data) == 1 else b"\n".join(data))
        return _new_event(ServerSentEvent, fields)


class NDJSONDecoder:
    """Newline-delimited JSON: one value a line; blank lines skipped, CRLF tolerated.

    A line over `max_line_bytes` ends decoding with `failure` set, as in SSEDecoder.
    """

    __slots__ = ("_limit", "_lines", "failure")

    def __init__(self, max_line_bytes: int) -> None:
        self._limit = max_line_bytes
        self._lines = _Lines()
        self.failure: UpstreamProtocolError | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        if self.failure is not None:
            return []
        limit = self._limit
        if chunk[-1:] == b"\n" and not self._lines.tail_size:  # the usual read: whole lines
            complete = chunk
        else:
            complete = self._lines.take(chunk, chunk.rfind(b"\n"))
        if len(complete) <= limit:  # then no line in it is longer
            lines = [line for line in complete.split(b"\n") if line.strip()]
        else:
            lines = []
            for line in complete.split(b"\n"):
                if len(line) > limit:
                    self._fail()
                    return lines
                if line.strip():
                    lines.append(line)
        if self._lines.tail_size > limit:
            self._fail()
        return lines

    def flush(self) -> list[bytes]:
        """The last line, when the stream ends without a final newline."""
        tail = self._lines.rest()
        return [tail] if tail.strip() and self.failure is None else []

    def _fail(self) -> None:
        self.failure = _too_large("a line", self._limit)
        self._lines.clear()
