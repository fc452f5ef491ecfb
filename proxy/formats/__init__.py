"""Output representations of one stream of text deltas (issue 13), and choosing one."""

from proxy.formats.encoders import (
    NDJSON,
    SSE,
    STREAM_FORMATS,
    TEXT,
    UI_MESSAGE_STREAM,
    Encoder,
    OutputFormat,
)
from proxy.formats.head import Head, Item
from proxy.formats.negotiation import negotiate

__all__ = [
    "NDJSON",
    "SSE",
    "STREAM_FORMATS",
    "TEXT",
    "UI_MESSAGE_STREAM",
    "Encoder",
    "Head",
    "Item",
    "OutputFormat",
    "negotiate",
]
