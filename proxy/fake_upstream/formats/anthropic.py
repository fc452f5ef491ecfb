"""Anthropic's messages stream: named SSE events from `message_start` to `message_stop`."""

from __future__ import annotations

from typing import Any, Final

from proxy.fake_upstream.formats.base import Usage, WireFormat, sse


class AnthropicFormat(WireFormat):
    path = "/v1/messages"
    finished, capped = "end_turn", "max_tokens"
    _ERROR_TYPES: Final = {429: "rate_limit_error", 529: "overloaded_error"}

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
        block = {"type": "text", "text": ""}
        return (
            sse({"type": "message_start", "message": message}, event=b"message_start")
            + sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                event=b"content_block_start",
            )
            + sse({"type": "ping"}, event=b"ping")
        )

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        delta = {"type": "text_delta", "text": text}
        event = {"type": "content_block_delta", "index": 0, "delta": delta}
        return sse(event, event=b"content_block_delta")

    def epilogue(self) -> bytes:
        return sse({"type": "content_block_stop", "index": 0}, event=b"content_block_stop")

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
