"""One adapter per upstream API, chosen by name (as uvicorn picks h11 or httptools)."""

from __future__ import annotations

from proxy.dialects.anthropic import Anthropic
from proxy.dialects.base import Dialect, Parsed, StreamParser, UpstreamRequest
from proxy.dialects.ollama import Ollama
from proxy.dialects.openai import OpenAIChat
from proxy.dialects.openai_completions import OpenAICompletions
from proxy.dialects.tgi import TGI

DIALECTS: dict[str, Dialect] = {
    dialect.name: dialect
    for dialect in (OpenAIChat(), OpenAICompletions(), Ollama(), TGI(), Anthropic())
}


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}") from None


__all__ = [
    "DIALECTS",
    "Dialect",
    "Parsed",
    "StreamParser",
    "UpstreamRequest",
    "get_dialect",
]
