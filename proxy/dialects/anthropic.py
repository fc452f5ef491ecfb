"""Anthropic `/v1/messages`: typed SSE events; text in `content_block_delta`/`text_delta`,
reasoning in `thinking_delta`, `message_stop` ends the stream, `error` events are failures,
`ping` is a keep-alive. A thinking block's `signature_delta` and `redacted_thinking` blocks
are neither text nor reasoning.

Reasoning is asked for with `thinking` and a token budget per effort (THINKING_BUDGETS). The
Messages API wants the budget at least 1024 and below `max_tokens`, and refuses temperature
and top_k, and top_p under 0.95, while thinking: those are not sent then (as the AI SDK's
Anthropic provider does), and docs/api.md says so.
"""

from __future__ import annotations

from typing import Any

from proxy.conversation import Conversation
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    SSEPartsParser,
    error_message_of_body,
    json_error_message,
    loads_event,
)
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, add_reasoning, add_text
from proxy.settings import ModelSpec, ReasoningEffort
from proxy.wire import ServerSentEvent

ANTHROPIC_VERSION = "2023-06-01"


# Thinking tokens asked for per effort; Anthropic's least is 1024.
THINKING_BUDGETS: dict[ReasoningEffort, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
}
MIN_THINKING_BUDGET = 1024


class AnthropicParser(SSEPartsParser):
    __slots__ = ()

    def read_event(self, event: ServerSentEvent, parts: list[Part]) -> None:
        payload = loads_event(event.data)
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta":
                add_text(parts, delta.get("text"))
            elif kind == "thinking_delta":
                add_reasoning(parts, delta.get("thinking"))
            return
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


class Anthropic:
    name = "anthropic"

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        # The Messages API takes the system prompt apart, and only user/assistant turns.
        system = [conversation.system] if conversation.system else []
        system += [m.content for m in conversation.messages if m.role == "system"]
        max_tokens = conversation.max_tokens or model.max_tokens
        body: dict[str, Any] = {
            "model": model.upstream_model or model.name,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in conversation.messages
                if m.role != "system"
            ],
            # Required upstream; without the client's value, the model's configured ceiling.
            "max_tokens": max_tokens,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        thinking = thinking_of(conversation.reasoning, max_tokens)
        if thinking is not None:
            body["thinking"] = thinking
        if thinking is None or thinking["type"] == "disabled":
            body.update(_sampling(conversation))
        elif conversation.top_p is not None and conversation.top_p >= 0.95:
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


def thinking_of(effort: ReasoningEffort | None, max_tokens: int) -> dict[str, Any] | None:
    """The `thinking` field for an effort: a budget from the table, kept below max_tokens;
    "none" (or no room for the least budget) turns thinking off; None asks nothing."""
    if effort is None:
        return None
    budget = min(THINKING_BUDGETS.get(effort, 0), max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return {"type": "disabled"}
    return {"type": "enabled", "budget_tokens": budget}


def _sampling(conversation: Conversation) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if conversation.temperature is not None:
        fields["temperature"] = min(conversation.temperature, 1.0)
    if conversation.top_p is not None:
        fields["top_p"] = conversation.top_p
    return fields
