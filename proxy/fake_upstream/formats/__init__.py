"""One module per upstream API's wire format, chosen by the request's path."""

from __future__ import annotations

from typing import Final

from proxy.fake_upstream.formats.anthropic import AnthropicFormat
from proxy.fake_upstream.formats.base import WireFormat
from proxy.fake_upstream.formats.ollama import OllamaFormat
from proxy.fake_upstream.formats.openai_chat import OpenAIChatFormat
from proxy.fake_upstream.formats.openai_completions import OpenAICompletionsFormat
from proxy.fake_upstream.formats.tgi import TGIFormat

FORMATS: Final[dict[str, WireFormat]] = {
    wire.path: wire
    for wire in (
        OpenAIChatFormat(),
        OpenAICompletionsFormat(),
        OllamaFormat(),
        TGIFormat(),
        AnthropicFormat(),
    )
}

__all__ = [
    "FORMATS",
    "AnthropicFormat",
    "OllamaFormat",
    "OpenAIChatFormat",
    "OpenAICompletionsFormat",
    "TGIFormat",
    "WireFormat",
]
