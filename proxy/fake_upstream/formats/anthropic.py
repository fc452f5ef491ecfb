"""Anthropic's messages stream: named SSE events from `message_start` to `message_stop`.

A reply that thinks (extended thinking) opens a `thinking` block at index 0, sends a
`thinking_delta` a token, then one `signature_delta` before that block stops; its text block
follows at index 1. A reply that does not think has its text block at index 0.

A reply that calls tools opens a `tool_use` block per call after those (at index 0 when it
neither thinks nor says anything first), with the call's id and name and an empty `input`,
then sends its arguments as `input_json_delta` fragments, and stops the block; its
`message_delta` says `stop_reason: "tool_use"`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final

from proxy.fake_upstream.calls import Fragment, ToolCall, tool_call_id
from proxy.fake_upstream.directives import ReasoningField
from proxy.fake_upstream.formats.base import Usage, WireFormat, messages_of, sse, text_of

# Real signatures are opaque base64 that a client sends back, unread, in its next turn.
_SIGNATURE: Final = base64.b64encode(b"fake-upstream thinking signature").decode()


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return sse(event, event=b"content_block_start")


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return sse(event, event=b"content_block_delta")


def _block_stop(index: int) -> bytes:
    return sse({"type": "content_block_stop", "index": index}, event=b"content_block_stop")


class AnthropicFormat(WireFormat):
    path = "/v1/messages"
    finished, capped = "end_turn", "max_tokens"
    _ERROR_TYPES: Final = {429: "rate_limit_error", 529: "overloaded_error"}
    _TEXT_BLOCK: Final = {"type": "text", "text": ""}

    def __init__(self, *, thinks: bool = False, text: bool = True, calls: bool = False) -> None:
        self._thinks, self._text = thinks, text
        self._text_index = 1 if thinks else 0
        self._first_call_index = self._text_index + (1 if text else 0)
        if calls:
            self.finished = "tool_use"

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        tools = body.get("tools")
        found = tools if isinstance(tools, list) else []
        names = (tool.get("name") for tool in found if isinstance(tool, dict))
        return [name for name in names if isinstance(name, str)]

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        messages = messages_of(body)
        last = messages[-1] if messages else {}
        content = last.get("content") if last.get("role") == "user" else None
        blocks = content if isinstance(content, list) else []
        results = [
            text_of(block.get("content"))
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        return results or None

    def with_calls(self, text: bool) -> WireFormat:
        return AnthropicFormat(thinks=self._thinks, text=text, calls=True)

    def call_fragment(self, calls: Sequence[ToolCall], fragment: Fragment, model: str) -> bytes:
        call, index = fragment.call, self._first_call_index + fragment.call.index
        delta = _block_delta(index, {"type": "input_json_delta", "partial_json": fragment.text})
        if fragment.first:
            id_ = tool_call_id("anthropic", call.index)
            block: dict[str, Any] = {"type": "tool_use", "id": id_, "name": call.name, "input": {}}
            delta = _block_start(index, block) + delta
        return delta + _block_stop(index) if fragment.last else delta

    def reasoning_asked(self, body: dict[str, Any]) -> bool | None:
        thinking = body.get("thinking")
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        return {"enabled": True, "adaptive": True, "disabled": False}.get(str(kind))

    def with_reasoning(self, field: ReasoningField) -> WireFormat:
        return AnthropicFormat(thinks=True)

    def preamble(self, model: str, usage: Usage | None = None) -> bytes:
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
        }
        if usage is not None:  # message_start counts the prompt, and one output token so far
            message["usage"] = {"input_tokens": usage.prompt_tokens, "output_tokens": 1}
        if self._thinks:
            first = _block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
        else:
            first = _block_start(0, self._TEXT_BLOCK) if self._text else b""
        return (
            sse({"type": "message_start", "message": message}, event=b"message_start")
            + first
            + sse({"type": "ping"}, event=b"ping")
        )

    def reasoning_token(self, index: int, text: str, model: str) -> bytes:
        return _block_delta(0, {"type": "thinking_delta", "thinking": text})

    def reasoning_end(self) -> bytes:
        signature = _block_delta(0, {"type": "signature_delta", "signature": _SIGNATURE})
        text = _block_start(1, self._TEXT_BLOCK) if self._text else b""
        return signature + _block_stop(0) + text

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return _block_delta(self._text_index, {"type": "text_delta", "text": text})

    def epilogue(self) -> bytes:
        return _block_stop(self._text_index) if self._text else b""

    def end(
        self, model: str, text: str, total: int, usage: Usage | None = None, *, capped: bool = False
    ) -> bytes:
        stop: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": self.finish_reason(capped), "stop_sequence": None},
        }
        if usage is not None:  # message_delta's output_tokens is the running total
            stop["usage"] = {"output_tokens": usage.completion_tokens}
        return sse(stop, event=b"message_delta") + sse(
            {"type": "message_stop"}, event=b"message_stop"
        )

    def error_event(self) -> bytes:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return sse(error, event=b"error")

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0\n\n'

    def error_body(self, status: int, message: str) -> Any:
        kind = self._ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
