"""What a stream is, as it crosses from a route to its response: a Head, then items.

    Head          once, first: the representation, and the values its headers and
                  encoder are made from
    Part          a text or reasoning delta, as it was decoded (proxy/parts.py)
    Done|Failed   once, last: how it ended (proxy/values.py)

Every streaming path operation yields these, from a live session or a stored stream alike;
StreamResponse (proxy/responses.py) writes them in the Head's format.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.formats.encoders import Encoder, OutputFormat
from proxy.parts import Item as StreamItem

STREAM_HEADERS = (
    (b"cache-control", b"no-cache, no-transform"),
    # nginx buffers proxied responses unless told not to.
    (b"x-accel-buffering", b"no"),
    # Browsers hold back ~1 KiB of text/plain for MIME sniffing without it.
    (b"x-content-type-options", b"nosniff"),
)


@dataclass(slots=True, frozen=True)
class Head:
    format: OutputFormat
    request_id: str
    keepalive: float  # seconds of silence before a keep-alive, in formats that have one
    offset: int = 0  # characters before the first delta (a resumed stream)
    message_id: str = ""  # the UI message stream's assistant message
    extra: tuple[tuple[str, str], ...] = ()  # e.g. a budgeted key's x-ratelimit-* headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        extra = (*self.format.headers.items(), *self.extra)
        return [
            *STREAM_HEADERS,
            (b"content-type", self.format.content_type.encode()),
            (b"x-request-id", self.request_id.encode()),
            *((name.lower().encode(), value.encode()) for name, value in extra),
        ]

    def encoder(self) -> Encoder:
        return self.format.encoder(self.offset, self.message_id)


Item = Head | StreamItem
