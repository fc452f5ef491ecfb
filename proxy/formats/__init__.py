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
from proxy.formats.negotiation import negotiate
from proxy.formats.outcome import (
    Done,
    Failed,
    Outcome,
    Usage,
    normalize_finish_reason,
    upstream_ending,
)

__all__ = [
    "NDJSON",
    "SSE",
    "STREAM_FORMATS",
    "TEXT",
    "UI_MESSAGE_STREAM",
    "Done",
    "Encoder",
    "Failed",
    "Outcome",
    "OutputFormat",
    "Usage",
    "negotiate",
    "normalize_finish_reason",
    "upstream_ending",
]
