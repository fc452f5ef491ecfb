"""OpenAI's legacy completions stream: SSE chunks with `choices[0].text`, then `[DONE]`."""

from __future__ import annotations

from typing import Any

from proxy.fake_upstream.formats.base import WireFormat, sse


class OpenAICompletionsFormat(WireFormat):
    path = "/v1/completions"

    def prompt(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def _chunk(self, model: str, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        chunk = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [choice],
        }
        return sse(chunk)

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return self._chunk(model, text)

    def end(self, model: str, text: str, total: int) -> bytes:
        return self._chunk(model, "", "stop") + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})

    def malformed(self) -> bytes:
        return b'data: {"choices":[{"text":"unterminated\n\n'
