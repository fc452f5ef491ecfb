"""OpenAI chat completions (and vLLM, llama.cpp, LM Studio, Groq, OpenRouter, LiteLLM...)."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Conversation
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    bearer_headers,
    chat_messages,
    error_message_of_body,
    json_error_message,
    loads_event,
    sampling_fields,
)
from proxy.errors import UpstreamProtocolError
from proxy.settings import ModelSpec
from proxy.wire import SSEDecoder


class OpenAIChatParser:
    __slots__ = ("_sse", "complete")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.complete = False

    def feed(self, chunk: bytes) -> str:
        text = ""
        for event in self._sse.feed(chunk):
            if event.data == b"[DONE]":
                self.complete = True
                continue
            payload = loads_event(event.data)
            if "error" in payload:
                raise UpstreamProtocolError(json_error_message(payload))
            choices = payload.get("choices")
            if not choices:  # usage-only chunks carry no choices
                continue
            choice = choices[0]
            content = (choice.get("delta") or {}).get("content")
            if content:
                text += content
            if choice.get("finish_reason"):
                self.complete = True
        return text

    def close(self) -> str:
        return ""


class OpenAIChat:
    name = "openai"

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        body: dict[str, Any] = {"messages": chat_messages(conversation), "stream": True}
        if model.upstream_model:
            body["model"] = model.upstream_model
        if conversation.max_tokens is not None:
            body["max_tokens"] = conversation.max_tokens
        body.update(sampling_fields(conversation))
        return UpstreamRequest("/v1/chat/completions", bearer_headers(model), body)

    def parser(self) -> OpenAIChatParser:
        return OpenAIChatParser()

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
