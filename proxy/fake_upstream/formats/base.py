"""What every fake wire format shares: the shape a dialect fills in, and SSE framing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.fake_upstream.directives import ReasoningField


def sse(payload: Any, *, event: bytes = b"", space: bool = True) -> bytes:
    head = b"event: " + event + b"\n" if event else b""
    return head + (b"data: " if space else b"data:") + orjson.dumps(payload) + b"\n\n"


@dataclass(slots=True, frozen=True)
class Usage:
    """The tokens a reply reports it used: the prompt's words, and the reply's tokens, its
    reasoning tokens among them (upstreams bill reasoning as output)."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0


class WireFormat:
    # Why a reply ended, in the API's own words: on its own, or at the request's max tokens.
    finished = "stop"
    capped = "length"
    """How one upstream API frames a streamed reply; a subclass per dialect fills it in."""

    path = ""
    content_type = b"text/event-stream"

    def prompt(self, body: dict[str, Any]) -> str:
        """The content of the last user message (a string, or text blocks to join)."""
        messages = body.get("messages")
        for message in reversed(messages if isinstance(messages, list) else []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        """The most tokens the request asks for, where it says."""
        return count_of(body.get("max_tokens"))

    def finish_reason(self, capped: bool) -> str:
        return self.capped if capped else self.finished

    def wants_usage(self, body: dict[str, Any]) -> bool:
        """Whether the request asked for usage, for APIs that report it only when asked."""
        return True

    def reasoning_asked(self, body: dict[str, Any]) -> bool | None:
        """Whether the request asks for reasoning (True), declines it (False), or does not say."""
        return None

    def with_reasoning(self, field: ReasoningField) -> WireFormat | None:
        """This format as it frames a reply that reasons before its text (`field`: where an
        OpenAI-compatible server puts the reasoning); None for an API with no reasoning shape."""
        return None

    def preamble(self, model: str, usage: Usage | None = None) -> bytes:
        return b""

    def reasoning_token(self, index: int, text: str, model: str) -> bytes:
        raise NotImplementedError

    def reasoning_end(self) -> bytes:
        """What closes the reasoning, before the first text token."""
        return b""

    def token(self, index: int, text: str, model: str, total: int) -> bytes:
        raise NotImplementedError

    def epilogue(self) -> bytes:
        """What follows the last token even in a reply cut short of its end marker."""
        return b""

    def end(
        self, model: str, text: str, total: int, usage: Usage | None = None, *, capped: bool = False
    ) -> bytes:
        """The end marker, and the usage where the API reports it: a client that never sees
        the marker must take the reply as cut short. `capped`: the reply stopped at the
        request's max tokens, and the marker says so in the API's words."""
        raise NotImplementedError

    def error_event(self) -> bytes:
        raise NotImplementedError

    def malformed(self) -> bytes:
        return b'data: {"choices":[{"index":0,"delta":{"content":"unterminated\n\n'

    def error_body(self, status: int, message: str) -> Any:
        kind = "rate_limit_error" if status == 429 else "server_error"
        return {"error": {"message": message, "type": kind, "code": None}}


def count_of(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (block.get("text") for block in content if isinstance(block, dict))
        return "".join(text for text in texts if isinstance(text, str))
    return ""
