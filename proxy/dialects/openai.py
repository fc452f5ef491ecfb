"""OpenAI chat completions (and vLLM, llama.cpp, LM Studio, Groq, OpenRouter, LiteLLM...).

Reasoning comes as `delta.reasoning_content` (DeepSeek, older vLLM) or `delta.reasoning`
(newer vLLM, llama.cpp, OpenRouter); a server that sends both sends the same text twice, so
the first that is not null is read, as the AI SDK reads it.
"""

from __future__ import annotations

from typing import Any

from proxy.conversation import Capabilities, Conversation
from proxy.dialects.base import UpstreamRequest
from proxy.dialects.common import (
    SSEPartsParser,
    ToolCalls,
    bearer_headers,
    error_message_of_body,
    json_error_message,
    loads_event,
    sampling_fields,
)
from proxy.dialects.openai_shapes import openai_messages, openai_tool_fields
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, add_reasoning, add_text, add_tool_call
from proxy.settings import ModelSpec
from proxy.wire import ServerSentEvent


def openai_choice(parser: SSEPartsParser, event: ServerSentEvent) -> dict[str, Any] | None:
    """`choices[0]` of an OpenAI-style event; marks the end (`[DONE]`, a finish_reason)."""
    if event.data == b"[DONE]":
        parser.complete = True
        return None
    payload = loads_event(event.data)
    if "error" in payload:
        raise UpstreamProtocolError(json_error_message(payload))
    # Asked for with stream_options.include_usage: a last chunk has it, the others null.
    usage = payload.get("usage")
    if usage is not None:  # null on every chunk but the last: nothing to read
        parser.usage = parser.usage.read(usage, "prompt_tokens", "completion_tokens")
    choices = payload.get("choices")
    if not choices:  # usage-only chunks carry no choices: no text
        return None
    choice: dict[str, Any] = choices[0]
    reason = choice.get("finish_reason")
    if reason:
        parser.complete = True
        parser.finish_reason = reason if isinstance(reason, str) else None
    return choice


def usage_options(model: ModelSpec) -> dict[str, Any]:
    """Ask for a last usage-only chunk (OpenAI, vLLM, llama.cpp, ...), unless told not to."""
    return {"stream_options": {"include_usage": True}} if model.stream_usage else {}


class OpenAIChatParser(SSEPartsParser):
    __slots__ = ("_calls",)

    def __init__(self, max_event_bytes: int) -> None:
        super().__init__(max_event_bytes)
        self._calls = ToolCalls()

    def read_event(self, event: ServerSentEvent, parts: list[Part]) -> None:
        choice = openai_choice(self, event)
        delta = choice.get("delta") if choice else None
        if not delta:
            return
        reasoning = delta.get("reasoning_content")
        add_reasoning(parts, delta.get("reasoning") if reasoning is None else reasoning)
        add_text(parts, delta.get("content"))
        calls = delta.get("tool_calls")
        if calls:
            self._read_calls(calls, parts)

    def _read_calls(self, calls: object, parts: list[Part]) -> None:
        for position, call in enumerate(calls if isinstance(calls, list) else ()):
            if not isinstance(call, dict):
                continue
            index = call.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                index = position  # some servers leave it out (or say -1) for one call
            function = call.get("function")
            if not isinstance(function, dict):
                function = {}
            piece = self._calls.piece(
                index, call.get("id"), function.get("name"), function.get("arguments")
            )
            add_tool_call(parts, piece)


class OpenAIChat:
    name = "openai"
    capabilities = Capabilities(
        tools=True, images=True, image_links=True, response_format=True, forced_tools=True
    )

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        body: dict[str, Any] = {"messages": openai_messages(conversation), "stream": True}
        if model.upstream_model:
            body["model"] = model.upstream_model
        if conversation.max_tokens is not None:
            body["max_tokens"] = conversation.max_tokens
        body.update(sampling_fields(conversation))
        body.update(usage_options(model))
        if conversation.reasoning is not None:
            body["reasoning_effort"] = conversation.reasoning
        body.update(openai_tool_fields(conversation))
        return UpstreamRequest("/v1/chat/completions", bearer_headers(model), body)

    def parser(self, max_event_bytes: int) -> OpenAIChatParser:
        return OpenAIChatParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
