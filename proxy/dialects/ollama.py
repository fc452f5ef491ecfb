"""Ollama `/api/chat`: NDJSON lines with `message.content` (and `message.thinking` when it
thinks: asked for with `think`), ended by `"done": true`.

Tools as OpenAI's; a call comes whole in one line, its arguments an object (sent on as their
JSON text) and without an id (one is made). Images go as base64 `images` on their message: a
link is refused, since the proxy fetches nothing for a client. A JSON answer is `format`
("json", or the schema). Ollama has no tool choice: `none` leaves the tools out, `required`
and a named function are refused.
"""

from __future__ import annotations

from typing import Any

from proxy.conversation import Capabilities, Conversation
from proxy.dialects.base import Parsed, UpstreamRequest
from proxy.dialects.common import (
    ToolCalls,
    bearer_headers,
    error_message_of_body,
    json_error_message,
    loads_event,
)
from proxy.dialects.ollama_shapes import ollama_messages, ollama_tool_fields
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, add_reasoning, add_text, add_tool_call
from proxy.settings import ModelSpec
from proxy.values import NO_USAGE
from proxy.wire import NDJSONDecoder


class OllamaParser:
    __slots__ = ("_calls", "_lines", "complete", "finish_reason", "usage")

    def __init__(self, max_event_bytes: int) -> None:
        self._lines = NDJSONDecoder(max_event_bytes)
        self._calls = ToolCalls()
        self.complete = False
        self.usage = NO_USAGE
        self.finish_reason: str | None = None

    def feed(self, chunk: bytes) -> Parsed:
        return self._parts(self._lines.feed(chunk))

    def close(self) -> Parsed:
        return self._parts(self._lines.flush())

    def _parts(self, lines: list[bytes]) -> Parsed:
        parts: list[Part] = []
        try:
            for line in lines:
                self._read_line(line, parts)
        except UpstreamProtocolError as failure:
            return parts, failure
        return parts, self._lines.failure

    def _read_line(self, line: bytes, parts: list[Part]) -> None:
        payload = loads_event(line)
        if "error" in payload:
            raise UpstreamProtocolError(json_error_message(payload))
        if payload.get("done") is True:
            self.complete = True
            reason = payload.get("done_reason")
            self.finish_reason = reason if isinstance(reason, str) else None
            self.usage = self.usage.read(payload, "prompt_eval_count", "eval_count")
        message = payload.get("message")
        if message:
            add_reasoning(parts, message.get("thinking"))
            add_text(parts, message.get("content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    name, arguments = function.get("name"), function.get("arguments")
                    piece = self._calls.piece(len(self._calls), call.get("id"), name, arguments)
                    add_tool_call(parts, piece)


class Ollama:
    name = "ollama"
    capabilities = Capabilities(tools=True, images=True, response_format=True, top_k=True)

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        options: dict[str, Any] = {}
        if conversation.max_tokens is not None:
            options["num_predict"] = conversation.max_tokens
        if conversation.temperature is not None:
            options["temperature"] = conversation.temperature
        if conversation.top_p is not None:
            options["top_p"] = conversation.top_p
        if conversation.top_k is not None:
            options["top_k"] = conversation.top_k
        if conversation.stop:
            options["stop"] = list(conversation.stop)
        body: dict[str, Any] = {
            # Ollama has no default model: the request must name one.
            "model": model.upstream_model or model.name,
            "messages": ollama_messages(conversation),
            "stream": True,
        }
        if options:
            body["options"] = options
        if conversation.reasoning is not None:
            body["think"] = conversation.reasoning != "none"
        body.update(ollama_tool_fields(conversation))
        return UpstreamRequest("/api/chat", bearer_headers(model), body)

    def parser(self, max_event_bytes: int) -> OllamaParser:
        return OllamaParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
