"""OpenAI's chat completions stream: SSE chunks with `delta.content`, then `data: [DONE]`."""

from __future__ import annotations

from proxy.fake_upstream.formats.base import WireFormat, sse


class OpenAIChatFormat(WireFormat):
    path = "/v1/chat/completions"

    def _chunk(self, model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [choice],
        }
        return sse(chunk)

    def preamble(self, model: str) -> bytes:
        # Real servers send keep-alive comments; a client must skip them.
        return self._chunk(model, {"role": "assistant", "content": ""}) + b": keep-alive\n\n"

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._chunk(model, {"content": text})

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._chunk(model, {}, "stop") + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})
