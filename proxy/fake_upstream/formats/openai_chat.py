"""OpenAI's chat completions stream: SSE chunks with `delta.content`, then `data: [DONE]`.

Usage comes only when the request says `stream_options: {"include_usage": true}`: then a last
chunk with no choices carries the counts, before `[DONE]`.

A reply that thinks sends its reasoning first, one chunk a token, in the field servers use:
`{"reasoning_content": "…", "content": null}` as DeepSeek's API does (older vLLM sends the same
field without `content`), or with `@reasoning_field=reasoning`, `{"reasoning": "…"}` alone, as
newer vLLM, llama.cpp and OpenRouter do; a reader must take both a null and a missing `content`.

A reply that calls tools streams each call as OpenAI and vLLM do: a first chunk with the call's
`index`, `id`, `type` and `function.name` (and empty `arguments`), then its argument fragments
under the same `index` alone; a second call follows the first's arguments; the last chunk says
`finish_reason: "tool_calls"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy.fake_upstream.calls import Fragment, ToolCall, tool_call_id
from proxy.fake_upstream.directives import ReasoningField
from proxy.fake_upstream.formats.base import (
    Usage,
    WireFormat,
    function_names,
    sse,
    trailing_tool_messages,
)


def asked_for_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def usage_chunk(chunk: dict[str, Any], usage: Usage) -> bytes:
    """The chunk OpenAI-compatible servers end with when asked for usage: no choices."""
    counts: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.reasoning_tokens:
        counts["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return sse({**chunk, "choices": [], "usage": counts})


class OpenAIChatFormat(WireFormat):
    path = "/v1/chat/completions"

    def __init__(
        self, reasoning_field: ReasoningField = "reasoning_content", *, calls: bool = False
    ) -> None:
        self._reasoning_field = reasoning_field
        if calls:
            self.finished = "tool_calls"

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        return function_names(body)

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        return trailing_tool_messages(body)

    def with_calls(self, text: bool) -> WireFormat:
        return OpenAIChatFormat(self._reasoning_field, calls=True)

    def call_fragment(self, calls: Sequence[ToolCall], fragment: Fragment, model: str) -> bytes:
        call = fragment.call
        delta = {"index": call.index, "function": {"arguments": fragment.text}}
        chunk = self._chunk(model, {"tool_calls": [delta]})
        if not fragment.first:
            return chunk
        opening = {
            "index": call.index,
            "id": tool_call_id("openai", call.index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        return self._chunk(model, {"tool_calls": [opening]}) + chunk

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return asked_for_usage(body)

    def reasoning_asked(self, body: dict[str, Any]) -> bool | None:
        effort = body.get("reasoning_effort")
        return effort != "none" if isinstance(effort, str) else None

    def with_reasoning(self, field: ReasoningField) -> WireFormat:
        return OpenAIChatFormat(field)

    def reasoning_token(self, index: int, text: str, model: str) -> bytes:
        field = self._reasoning_field
        if field == "reasoning_content":
            return self._chunk(model, {field: text, "content": None})
        return self._chunk(model, {field: text})

    def _payload(self, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [choice],
        }

    def _chunk(self, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(self._payload(model, delta, finish))

    def preamble(self, model: str, usage: Usage | None = None) -> bytes:
        # Real servers send keep-alive comments; a client must skip them.
        return self._chunk(model, {"role": "assistant", "content": ""}) + b": keep-alive\n\n"

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._chunk(model, {"content": text})

    def end(
        self, model: str, text: str, total: int, usage: Usage | None = None, *, capped: bool = False
    ) -> bytes:
        last = self._chunk(model, {}, self.finish_reason(capped))
        if usage is not None:
            last += usage_chunk(self._payload(model, {}, None), usage)
        return last + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})
