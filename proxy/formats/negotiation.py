"""Content negotiation by `Accept` (RFC 9110 §12.5.1), for the few formats a stream offers.

Each offered type takes the quality of the most specific media range that matches it
(`text/plain` over `text/*` over `*/*`); q=0 refuses it. The best quality wins, and among
equals the server's order of preference (raw text first). Parameters other than `q` are
ignored: `text/plain; charset=utf-8` asks for raw text. An absent or empty header is `*/*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from proxy.formats.encoders import OutputFormat

F = TypeVar("F", bound=OutputFormat)

# A header longer than this is not a browser's or an SDK's; it is not worth parsing.
_MAX_RANGES = 64


def _media_ranges(accept: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) of every well-formed range; malformed ones are skipped."""
    ranges: list[tuple[str, str, float]] = []
    for item in accept.split(",")[:_MAX_RANGES]:
        media, *parameters = item.split(";")
        kind, slash, subtype = media.strip().lower().partition("/")
        if not slash or not kind or not subtype or (kind == "*" and subtype != "*"):
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    quality = 0.0
        ranges.append((kind, subtype, quality))
    return ranges


def _quality(media_type: str, ranges: list[tuple[str, str, float]]) -> float:
    kind, _, subtype = media_type.partition("/")
    best_specificity, quality = -1, 0.0
    for range_kind, range_subtype, range_quality in ranges:
        if range_kind == kind and range_subtype == subtype:
            specificity = 2
        elif range_kind == kind and range_subtype == "*":
            specificity = 1
        elif range_kind == "*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, quality = specificity, range_quality
    return quality


def negotiate(accept: str | None, offered: Sequence[F]) -> F | None:
    """The offered format the client prefers (None: nothing it accepts, a 406)."""
    if accept is None or not accept.strip():
        return offered[0]
    ranges = _media_ranges(accept)
    if not ranges:  # nothing readable: treat as no preference, as servers commonly do
        return offered[0]
    best: F | None = None
    best_quality = 0.0
    for candidate in offered:
        quality = _quality(candidate.media_type, ranges)
        if quality > best_quality:
            best, best_quality = candidate, quality
    return best
