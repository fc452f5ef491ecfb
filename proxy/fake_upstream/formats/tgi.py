"""Hugging Face TGI's stream: `data:` (no space) events per token, special tokens included."""

from __future__ import annotations

from typing import Any, Final

from proxy.fake_upstream.formats.base import Usage, WireFormat, count_of, sse


class TGIFormat(WireFormat):
    path = "/generate_stream"
    finished = "eos_token"
    _SPECIAL: Final = {"id": 0, "text": "<|special|>", "logprob": 0.0, "special": True}
    _END_OF_SEQUENCE: Final = {"id": 2, "text": "</s>", "logprob": 0.0, "special": True}

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        options = body.get("parameters")
        return count_of(options.get("max_new_tokens")) if isinstance(options, dict) else None

    def prompt(self, body: dict[str, Any]) -> str:
        inputs = body.get("inputs")
        return inputs if isinstance(inputs, str) else ""

    def wants_usage(self, body: dict[str, Any]) -> bool:
        # TGI adds `details` to its last event only when the request's parameters ask.
        parameters = body.get("parameters")
        return isinstance(parameters, dict) and parameters.get("details") is True

    def _event(
        self,
        token: dict[str, Any],
        generated_text: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> bytes:
        event = {
            "index": token["id"],
            "token": token,
            "generated_text": generated_text,
            "details": details,
        }
        return sse(event, space=False)  # TGI writes "data:" without the space

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        event = self._event({"id": index, "text": text, "logprob": -0.5, "special": False})
        if index == 1 and total >= 3:
            event += self._event(self._SPECIAL)  # a client must not show special tokens
        return event

    def end(
        self, model: str, text: str, total: int, usage: Usage | None = None, *, capped: bool = False
    ) -> bytes:
        # TGI's stream counts generated tokens only (the end-of-sequence token among them).
        details = (
            {
                "finish_reason": self.finish_reason(capped),
                "generated_tokens": usage.completion_tokens,
                "seed": None,
            }
            if usage is not None
            else None
        )
        return self._event(self._END_OF_SEQUENCE, text, details)

    def error_event(self) -> bytes:
        return sse({"error": "fake in-band error", "error_type": "generation"}, space=False)

    def malformed(self) -> bytes:
        return b'data:{"index":0,"token":{"text":"unterminated\n\n'

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message, "error_type": "overloaded" if status == 429 else "generation"}
