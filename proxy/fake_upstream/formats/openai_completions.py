"""OpenAI's legacy completions stream: SSE chunks with `choices[0].text`, then `[DONE]`;
usage, when asked for, as in the chat stream (vLLM and others report it here too)."""

from __future__ import annotations

from typing import Any

from proxy.fake_upstream.formats.base import Usage, WireFormat, sse
from proxy.fake_upstream.formats.openai_chat import asked_for_usage, usage_chunk


class OpenAICompletionsFormat(WireFormat):
    path = "/v1/completions"

    def prompt(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return asked_for_usage(body)

    def _payload(self, model: str, text: str, finish: str | None) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [choice],
        }

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        return sse(self._payload(model, text, None))

    def end(
        self, model: str, text: str, total: int, usage: Usage | None = None, *, capped: bool = False
    ) -> bytes:
        last = sse(self._payload(model, "", self.finish_reason(capped)))
        if usage is not None:
            last += usage_chunk(self._payload(model, "", None), usage)
        return last + b"data: [DONE]\n\n"

    def error_event(self) -> bytes:
        return sse({"error": {"message": "fake in-band error", "type": "server_error"}})

    def malformed(self) -> bytes:
        return b'data: {"choices":[{"text":"unterminated\n\n'
