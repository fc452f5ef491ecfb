"""Small pieces several adapters share."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.conversation import Conversation
from proxy.dialects.base import Parsed
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part
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


def chat_messages(conversation: Conversation) -> list[dict[str, str]]:
    """Role/content messages with the system prompt first, as chat APIs take them."""
    messages = [{"role": "system", "content": conversation.system}] if conversation.system else []
    messages.extend({"role": m.role, "content": m.content} for m in conversation.messages)
    return messages


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
