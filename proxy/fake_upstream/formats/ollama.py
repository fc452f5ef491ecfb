"""Ollama's chat stream: one JSON object per line, the last with `done: true`.

A reply that thinks (`think` in the request) sends its reasoning first, in `message.thinking`
with an empty `content`, one line a token, as Ollama does for thinking models.

A reply that calls tools sends its calls whole, all in one line with an empty `content`, each
`{"function": {"name": …, "arguments": {…}}}` with its arguments as an object and no id, as
Ollama does; the line comes once all the arguments would have streamed, and `done_reason` is
`stop` even then, as Ollama's is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from proxy.fake_upstream.calls import Fragment, ToolCall
from proxy.fake_upstream.directives import ReasoningField
from proxy.fake_upstream.formats.base import (
    Usage,
    WireFormat,
    count_of,
    function_names,
    trailing_tool_messages,
)


class OllamaFormat(WireFormat):
    path = "/api/chat"
    content_type = b"application/x-ndjson"

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        options = body.get("options")
        return count_of(options.get("num_predict")) if isinstance(options, dict) else None

    def reasoning_asked(self, body: dict[str, Any]) -> bool | None:
        think = body.get("think")  # true, false, or (gpt-oss) an effort
        if think is True or think in ("low", "medium", "high"):
            return True
        return False if think is False else None

    def with_reasoning(self, field: ReasoningField) -> WireFormat:
        return self

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        return function_names(body)

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        return trailing_tool_messages(body)

    def call_fragment(self, calls: Sequence[ToolCall], fragment: Fragment, model: str) -> bytes:
        if not (fragment.last and fragment.call is calls[-1]):
            return b""
        whole = [{"function": {"name": call.name, "arguments": call.input}} for call in calls]
        message = {"role": "assistant", "content": "", "tool_calls": whole}
        return self._line_of(model, message)

    def _line(self, model: str, content: str, **fields: Any) -> bytes:
        return self._line_of(model, {"role": "assistant", "content": content}, **fields)

    def _line_of(self, model: str, message: dict[str, Any], **fields: Any) -> bytes:
        line = {
            "model": model,
            "created_at": "2024-01-01T00:00:00Z",
            "message": message,
            "done": False,
            **fields,
        }
        return orjson.dumps(line) + b"\n"

    def reasoning_token(self, index: int, text: str, model: str) -> bytes:
        return self._line_of(model, {"role": "assistant", "content": "", "thinking": text})

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._line(model, text)

    def end(
        self, model: str, text: str, total: int, usage: Usage | None = None, *, capped: bool = False
    ) -> bytes:
        counts = (
            {"prompt_eval_count": usage.prompt_tokens, "eval_count": usage.completion_tokens}
            if usage is not None
            else {}
        )
        reason = self.finish_reason(capped)
        return self._line(model, "", done=True, done_reason=reason, total_duration=1, **counts)

    def error_event(self) -> bytes:
        return b'{"error":"fake in-band error"}\n'

    def malformed(self) -> bytes:
        return b'{"message":{"content":"unterminated\n'

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}
