"""OpenAI legacy completions (`/v1/completions`): one prompt string in, `choices[0].text` out."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Capabilities, Conversation
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    SSEPartsParser,
    bearer_headers,
    error_message_of_body,
    sampling_fields,
)
from proxy.dialects.openai import openai_choice, usage_options
from proxy.parts import Part, add_text
from proxy.settings import ModelSpec
from proxy.wire import ServerSentEvent


class CompletionsParser(SSEPartsParser):
    __slots__ = ()

    def read_event(self, event: ServerSentEvent, parts: list[Part]) -> None:
        choice = openai_choice(self, event)
        if choice:
            add_text(parts, choice.get("text"))


class OpenAICompletions:
    name = "openai-completions"
    capabilities = Capabilities()  # text alone

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        body: dict[str, Any] = {"prompt": conversation.as_prompt(), "stream": True}
        if model.upstream_model:
            body["model"] = model.upstream_model
        if conversation.max_tokens is not None:
            body["max_tokens"] = conversation.max_tokens
        body.update(sampling_fields(conversation))
        body.update(usage_options(model))
        return UpstreamRequest("/v1/completions", bearer_headers(model), body)

    def parser(self, max_event_bytes: int) -> CompletionsParser:
        return CompletionsParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
