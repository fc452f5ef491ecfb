"""One adapter per upstream API, chosen by name (as uvicorn picks h11 or httptools)."""

from __future__ import annotations

from proxy.dialects.base import Dialect, StreamParser, UpstreamRequest
from proxy.dialects.openai import OpenAIChat

DIALECTS: dict[str, Dialect] = {
    OpenAIChat.name: OpenAIChat(),
}


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}") from None


__all__ = ["DIALECTS", "Dialect", "StreamParser", "UpstreamRequest", "get_dialect"]
