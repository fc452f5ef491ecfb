"""Anthropic `/v1/messages`: typed SSE events; text in `content_block_delta`/`text_delta`,
`message_stop` ends the stream, `error` events are failures, `ping` is a keep-alive."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Conversation
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    SSETextParser,
    error_message_of_body,
    json_error_message,
    loads_event,
)
from proxy.errors import UpstreamProtocolError
from proxy.settings import ModelSpec
from proxy.wire import ServerSentEvent

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicParser(SSETextParser):
    __slots__ = ()

    def event_text(self, event: ServerSentEvent) -> str | None:
        payload = loads_event(event.data)
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            text: str | None = delta.get("text") if delta.get("type") == "text_delta" else None
            return text
        if kind == "message_start":
            message = payload.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            self.usage = self.usage.read(usage, "input_tokens", "output_tokens")
        elif kind == "message_delta":  # cumulative counts, output_tokens always
            self.usage = self.usage.read(payload.get("usage"), "input_tokens", "output_tokens")
            reason = (payload.get("delta") or {}).get("stop_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error" or event.event == "error":
            raise UpstreamProtocolError(json_error_message(payload))
        return None


class Anthropic:
    name = "anthropic"

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        # The Messages API takes the system prompt apart, and only user/assistant turns.
        system = [conversation.system] if conversation.system else []
        system += [m.content for m in conversation.messages if m.role == "system"]
        body: dict[str, Any] = {
            "model": model.upstream_model or model.name,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in conversation.messages
                if m.role != "system"
            ],
            # Required upstream; without the client's value, the model's configured ceiling.
            "max_tokens": conversation.max_tokens or model.max_tokens,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if conversation.temperature is not None:
            body["temperature"] = min(conversation.temperature, 1.0)
        if conversation.top_p is not None:
            body["top_p"] = conversation.top_p
        if conversation.stop:
            body["stop_sequences"] = list(conversation.stop)
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if model.api_key is not None:
            headers["x-api-key"] = model.api_key.get_secret_value()
        return UpstreamRequest("/v1/messages", headers, body)

    def parser(self, max_event_bytes: int) -> AnthropicParser:
        return AnthropicParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
