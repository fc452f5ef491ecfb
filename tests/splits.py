"""Hypothesis helpers: cut a byte stream into arbitrary TCP reads."""

from __future__ import annotations

from hypothesis import strategies as st

from proxy.parts import Part


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)

# Text as upstreams send it, with the characters that break naive line splitting and
# multi-byte UTF-8 of every length.
TRICKY = ["é", "ß", "世界", "€", "🙂", "𝄞", "\u2028", "\u0085", "\x0c", "\t", '"', "\\", ":"]
token_text = st.one_of(st.text(max_size=12), st.sampled_from(TRICKY))


def text_of(parts: list[Part]) -> str:
    """The text parts of what a parser read, joined (its reasoning left out)."""
    return "".join(part for part in parts if isinstance(part, str))
