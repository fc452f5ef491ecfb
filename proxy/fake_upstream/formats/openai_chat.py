"""OpenAI's chat completions stream: SSE chunks with `delta.content`, then `data: [DONE]`.

Usage comes only when the request says `stream_options: {"include_usage": true}`: then a last
chunk with no choices carries the counts, before `[DONE]`.
"""

from __future__ import annotations

from typing import Any

from proxy.fake_upstream.formats.base import Usage, WireFormat, sse


def asked_for_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def usage_chunk(chunk: dict[str, Any], usage: Usage) -> bytes:
    """The chunk OpenAI-compatible servers end with when asked for usage: no choices."""
    counts = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    return sse({**chunk, "choices": [], "usage": counts})


class OpenAIChatFormat(WireFormat):
    path = "/v1/chat/completions"

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return asked_for_usage(body)

    def _payload(self, model: str, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [choice],
        }

    def _chunk(self, model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
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
