"""What every fake wire format shares: the shape a dialect fills in, and SSE framing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.fake_upstream.calls import Fragment, ToolCall
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
        """The content of the last user message (a string, or text blocks to join; images
        and other blocks left out), past user messages that only carry tool results."""
        for message in reversed(messages_of(body)):
            if message.get("role") == "user" and not _only_tool_results(message.get("content")):
                return text_of(message.get("content"))
        return ""

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        """The names of the request's tools, in order; none for an API that has no tools."""
        return []

    def tool_results(self, body: dict[str, Any]) -> list[str] | None:
        """The contents of the tool results the conversation's last turn carries, in order;
        None when it carries none."""
        return None

    def with_calls(self, text: bool) -> WireFormat:
        """This format as it frames a reply that calls tools (`text`: a few words first)."""
        return self

    def call_fragment(self, calls: Sequence[ToolCall], fragment: Fragment, model: str) -> bytes:
        """One fragment of a call's arguments, with whatever opens its call before the first
        and closes it after the last."""
        raise NotImplementedError

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


def function_names(body: dict[str, Any]) -> list[str]:
    """The names of OpenAI-shaped tools (`{"type": "function", "function": {"name": …}}`)."""
    tools = body.get("tools")
    names = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            names.append(name)
    return names


def trailing_tool_messages(body: dict[str, Any]) -> list[str] | None:
    """The contents of the `tool` messages that end the conversation (OpenAI's and Ollama's
    shape for results), or None when it does not end with one."""
    results: list[str] = []
    for message in reversed(messages_of(body)):
        if message.get("role") != "tool":
            break
        results.append(text_of(message.get("content")))
    return results[::-1] or None


def messages_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    found = messages if isinstance(messages, list) else []
    return [message for message in found if isinstance(message, dict)]


def _only_tool_results(content: Any) -> bool:
    """Whether content is Anthropic's user turn that only answers calls: no prompt in it."""
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(block, dict) and block.get("type") == "tool_result" for block in content)
    )


def text_of(content: Any) -> str:
    """A message's text: a string, or its text blocks joined (images and the like left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (block.get("text") for block in content if isinstance(block, dict))
        return "".join(text for text in texts if isinstance(text, str))
    return ""
