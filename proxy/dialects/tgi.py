"""Hugging Face TGI `/generate_stream`: SSE with `token.text`; the last event has
`generated_text`. Special tokens (end-of-sequence and the like) are not text."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Capabilities, Conversation
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    SSEPartsParser,
    bearer_headers,
    error_message_of_body,
    json_error_message,
    loads_event,
)
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, add_text
from proxy.settings import ModelSpec
from proxy.wire import ServerSentEvent


class TGIParser(SSEPartsParser):
    __slots__ = ()

    def read_event(self, event: ServerSentEvent, parts: list[Part]) -> None:
        payload = loads_event(event.data)
        if "error" in payload:
            raise UpstreamProtocolError(json_error_message(payload))
        if payload.get("generated_text") is not None:
            self.complete = True
            # TGI's stream counts the generated tokens only, and only when asked (`details`).
            self.usage = self.usage.read(payload.get("details"), None, "generated_tokens")
            reason = (payload.get("details") or {}).get("finish_reason")  # with `details` only
            self.finish_reason = reason if isinstance(reason, str) else None
        token = payload.get("token") or {}
        if not token.get("special"):
            add_text(parts, token.get("text"))


class TGI:
    name = "tgi"
    capabilities = Capabilities(top_k=True)  # text alone, and top_k sampling

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        parameters: dict[str, Any] = {}
        if conversation.max_tokens is not None:
            parameters["max_new_tokens"] = conversation.max_tokens
        # TGI rejects temperature 0 and top_p 1 (both must be strictly inside their range);
        # those values mean "greedy" and "no nucleus cut", which are its defaults anyway.
        if conversation.temperature:
            parameters["temperature"] = conversation.temperature
        if conversation.top_p is not None and 0 < conversation.top_p < 1:
            parameters["top_p"] = conversation.top_p
        if conversation.top_k is not None:
            parameters["top_k"] = conversation.top_k
        if conversation.stop:
            parameters["stop"] = list(conversation.stop)
        if model.stream_usage:
            parameters["details"] = True  # the last event then counts the generated tokens
        body: dict[str, Any] = {"inputs": conversation.as_prompt(), "stream": True}
        if parameters:
            body["parameters"] = parameters
        return UpstreamRequest("/generate_stream", bearer_headers(model), body)

    def parser(self, max_event_bytes: int) -> TGIParser:
        return TGIParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
