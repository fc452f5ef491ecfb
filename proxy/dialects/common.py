"""Small pieces several adapters share."""

from __future__ import annotations

import os
from typing import Any

import orjson

from proxy.conversation import Conversation
from proxy.dialects.base import Parsed
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part, ToolCallDelta
from proxy.settings import ModelSpec
from proxy.values import NO_USAGE
from proxy.wire import ServerSentEvent, SSEDecoder

_MAX_MESSAGE_CHARS = 300


def loads_event(data: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("upstream sent an unreadable event") from None
    if not isinstance(payload, dict):
        raise UpstreamProtocolError("upstream sent an event that is not a JSON object")
    return payload


def error_message_of_body(body: bytes) -> str:
    """The message inside an upstream error response body, or "" if there is none."""
    try:
        return json_error_message(orjson.loads(body)) if body else ""
    except orjson.JSONDecodeError:
        return body[:_MAX_MESSAGE_CHARS].decode("utf-8", "replace").strip()


def json_error_message(payload: Any) -> str:
    """The message of the common error shapes: {"error": {"message"}}, {"error": "..."}."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    if not isinstance(error, str):
        return "upstream reported an error"
    return error[:_MAX_MESSAGE_CHARS]


def bearer_headers(model: ModelSpec) -> dict[str, str]:
    if model.api_key is None:
        return {}
    return {"Authorization": f"Bearer {model.api_key.get_secret_value()}"}


def sampling_fields(conversation: Conversation) -> dict[str, Any]:
    """temperature, top_p and stop, only when the client gave them."""
    fields: dict[str, Any] = {}
    if conversation.temperature is not None:
        fields["temperature"] = conversation.temperature
    if conversation.top_p is not None:
        fields["top_p"] = conversation.top_p
    if conversation.stop:
        fields["stop"] = list(conversation.stop)
    return fields


class SSEPartsParser:
    """A StreamParser for SSE dialects: subclasses say what one event means."""

    __slots__ = ("_sse", "complete", "finish_reason", "usage")

    def __init__(self, max_event_bytes: int) -> None:
        self._sse = SSEDecoder(max_event_bytes)
        self.complete = False
        self.usage = NO_USAGE
        self.finish_reason: str | None = None

    def feed(self, chunk: bytes) -> Parsed:
        parts: list[Part] = []
        try:
            for event in self._sse.feed(chunk):
                self.read_event(event, parts)
        except UpstreamProtocolError as failure:
            return parts, failure
        return parts, self._sse.failure

    def close(self) -> Parsed:
        return [], None

    def read_event(self, event: ServerSentEvent, parts: list[Part]) -> None:
        """Add the parts one event carries (proxy/parts.py add_text, add_reasoning); set
        `complete` at the end marker; raise on errors."""
        raise NotImplementedError


class ToolCalls:
    """The function calls of one answer as its parser reads them (SPEC §5h): each call's id and
    name are sent once, with its first piece, whatever the upstream repeats; a call the
    upstream gave no id gets a unique one."""

    __slots__ = ("_begun",)

    def __init__(self) -> None:
        self._begun: set[int] = set()

    def __len__(self) -> int:
        return len(self._begun)

    def piece(self, index: int, call_id: object, name: object, arguments: object) -> ToolCallDelta:
        fragment = arguments_text(arguments)
        if index in self._begun:
            return ToolCallDelta(index, None, None, fragment)
        self._begun.add(index)
        given = call_id if isinstance(call_id, str) and call_id else None
        return ToolCallDelta(
            index, given or new_call_id(), name if isinstance(name, str) else "", fragment
        )


def new_call_id() -> str:
    return "call_" + os.urandom(12).hex()


def arguments_text(arguments: object) -> str:
    """A call's arguments as JSON text: a string as it came, an object serialised (Ollama
    sends objects), nothing as ""."""
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return orjson.dumps(arguments).decode()
