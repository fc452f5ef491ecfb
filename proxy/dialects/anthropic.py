"""Anthropic `/v1/messages`: typed SSE events; text in `content_block_delta`/`text_delta`,
reasoning in `thinking_delta`, `message_stop` ends the stream, `error` events are failures,
`ping` is a keep-alive. A thinking block's `signature_delta` is a part of its own
(ReasoningSignature), relayed by the Messages API so a client can send its thinking back
(issue 29); `redacted_thinking` blocks are neither text nor reasoning.

Reasoning is asked for with `thinking` and a token budget per effort (THINKING_BUDGETS). The
Messages API wants the budget at least 1024 and below `max_tokens`, and refuses temperature
and top_k, and top_p under 0.95, while thinking: those are not sent then (as the AI SDK's
Anthropic provider does), and docs/api.md says so.
"""

from __future__ import annotations

from typing import Any

from proxy.conversation import Capabilities, Conversation
from proxy.dialects.anthropic_shapes import (
    anthropic_messages,
    anthropic_sampling,
    anthropic_tool_fields,
)
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    SSEPartsParser,
    ToolCalls,
    error_message_of_body,
    json_error_message,
    loads_event,
)
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, ReasoningSignature, add_reasoning, add_text, add_tool_call
from proxy.settings import ModelSpec
from proxy.wire import ServerSentEvent

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicParser(SSEPartsParser):
    """A `tool_use` block is a call: numbered among the calls alone (OpenAI's index), its
    `input_json_delta` fragments its arguments; a call that streamed none has `{}`."""

    __slots__ = ("_blocks", "_calls", "_empty")

    def __init__(self, max_event_bytes: int) -> None:
        super().__init__(max_event_bytes)
        self._calls = ToolCalls()
        self._blocks: dict[object, int] = {}  # a tool_use block's index: its call's index
        self._empty: set[int] = set()  # calls whose arguments have not begun

    def read_event(self, event: ServerSentEvent, parts: list[Part]) -> None:
        payload = loads_event(event.data)
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            self._read_delta(payload, parts)
        elif kind == "content_block_start":
            self._start_block(payload, parts)
        elif kind == "content_block_stop":
            call = self._blocks.pop(payload.get("index"), None)
            if call is not None and call in self._empty:
                self._empty.discard(call)
                add_tool_call(parts, self._calls.piece(call, None, None, "{}"))
        else:
            self._read_message_event(kind, payload, event)

    def _read_delta(self, payload: dict[str, Any], parts: list[Part]) -> None:
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            add_text(parts, delta.get("text"))
        elif kind == "thinking_delta":
            add_reasoning(parts, delta.get("thinking"))
        elif kind == "signature_delta":
            signature = delta.get("signature")
            if isinstance(signature, str) and signature:
                parts.append(ReasoningSignature(signature))
        elif kind == "input_json_delta":
            call = self._blocks.get(payload.get("index"))
            fragment = delta.get("partial_json")
            if call is not None and isinstance(fragment, str) and fragment:
                self._empty.discard(call)
                add_tool_call(parts, self._calls.piece(call, None, None, fragment))

    def _start_block(self, payload: dict[str, Any], parts: list[Part]) -> None:
        block = payload.get("content_block")
        if not isinstance(block, dict) or block.get("type") != "tool_use":
            return
        call = self._blocks[payload.get("index")] = len(self._calls)
        given = block.get("input")
        arguments = given if isinstance(given, dict) and given else ""
        if not arguments:
            self._empty.add(call)
        add_tool_call(parts, self._calls.piece(call, block.get("id"), block.get("name"), arguments))

    def _read_message_event(
        self, kind: object, payload: dict[str, Any], event: ServerSentEvent
    ) -> None:
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
    # Structured output has no field of its own in the Messages API: refused, not imitated.
    capabilities = Capabilities(
        tools=True, images=True, image_links=True, forced_tools=True, top_k=True
    )

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        # The Messages API takes the system prompt apart, and only user/assistant turns.
        system = [conversation.system] if conversation.system else []
        system += [m.content for m in conversation.messages if m.role == "system"]
        max_tokens = conversation.max_tokens or model.max_tokens
        body: dict[str, Any] = {
            "model": model.upstream_model or model.name,
            "messages": anthropic_messages(conversation),
            # Required upstream; without the client's value, the model's configured ceiling.
            "max_tokens": max_tokens,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        body.update(anthropic_sampling(conversation, max_tokens))
        if conversation.stop:
            body["stop_sequences"] = list(conversation.stop)
        body.update(anthropic_tool_fields(conversation))
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if model.api_key is not None:
            headers["x-api-key"] = model.api_key.get_secret_value()
        return UpstreamRequest("/v1/messages", headers, body)

    def parser(self, max_event_bytes: int) -> AnthropicParser:
        return AnthropicParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
