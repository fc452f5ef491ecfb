"""Ollama `/api/chat`: NDJSON lines with `message.content` (and `message.thinking` when it
thinks: asked for with `think`), ended by `"done": true`."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Conversation
from proxy.dialects.base import Parsed, UpstreamRequest
from proxy.dialects.common import (
    bearer_headers,
    chat_messages,
    error_message_of_body,
    json_error_message,
    loads_event,
)
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, add_reasoning, add_text
from proxy.settings import ModelSpec
from proxy.values import NO_USAGE
from proxy.wire import NDJSONDecoder


class OllamaParser:
    __slots__ = ("_lines", "complete", "finish_reason", "usage")

    def __init__(self, max_event_bytes: int) -> None:
        self._lines = NDJSONDecoder(max_event_bytes)
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


class Ollama:
    name = "ollama"

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest:
        options: dict[str, Any] = {}
        if conversation.max_tokens is not None:
            options["num_predict"] = conversation.max_tokens
        if conversation.temperature is not None:
            options["temperature"] = conversation.temperature
        if conversation.top_p is not None:
            options["top_p"] = conversation.top_p
        if conversation.stop:
            options["stop"] = list(conversation.stop)
        body: dict[str, Any] = {
            # Ollama has no default model: the request must name one.
            "model": model.upstream_model or model.name,
            "messages": chat_messages(conversation),
            "stream": True,
        }
        if options:
            body["options"] = options
        if conversation.reasoning is not None:
            body["think"] = conversation.reasoning != "none"
        return UpstreamRequest("/api/chat", bearer_headers(model), body)

    def parser(self, max_event_bytes: int) -> OllamaParser:
        return OllamaParser(max_event_bytes)

    def error_message(self, body: bytes) -> str:
        return error_message_of_body(body)
