"""The AI SDK's chat request body, as DefaultChatTransport sends it (issue 13)."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from proxy.chat import ChatRequest
from proxy.conversation import Message

# What `useChat` (ai 5 to 7) posts for a second turn, with the transport's extra `body`.
SECOND_TURN = {
    "id": "Wm3FzJt2bPQnYxKc",
    "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]},
        {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "text", "text": "Hello!", "state": "done"},
            ],
        },
        {
            "id": "u2",
            "role": "user",
            "parts": [
                {"type": "file", "mediaType": "image/png", "url": "data:,"},
                {"type": "text", "text": "How are "},
                {"type": "text", "text": "you?"},
            ],
            "metadata": {"sent": 1},
        },
    ],
    "trigger": "submit-message",
    "messageId": None,
    "model": "default",
    "temperature": 0.2,
}


def parse(body: dict[str, object]) -> ChatRequest:
    return ChatRequest.model_validate_json(orjson.dumps(body))


def test_ui_messages_become_the_conversation_text_parts_only() -> None:
    request = parse(SECOND_TURN)
    conversation = request.conversation()
    assert conversation.messages == (
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("user", "How are you?"),
    )
    assert conversation.temperature == 0.2
    assert request.id == "Wm3FzJt2bPQnYxKc"
    assert request.model == "default"


def test_a_new_message_gets_a_fresh_id_a_regeneration_keeps_the_named_one() -> None:
    fresh = parse(SECOND_TURN)
    assert fresh.response_message_id() != fresh.response_message_id()
    regenerate = parse({**SECOND_TURN, "trigger": "regenerate-message", "messageId": "a1"})
    assert regenerate.response_message_id() == "a1"


@pytest.mark.parametrize(
    "change",
    [
        {"id": None},
        {"id": ""},
        {"id": "../etc"},
        {"id": ".."},
        {"id": "x" * 129},
        {"messages": []},
        {"prompt": "and a prompt"},
        {"temperature": 3},
    ],
)
def test_malformed_chat_requests_are_refused(change: dict[str, object]) -> None:
    body = {**SECOND_TURN, **change}
    if change.get("id") is None and "id" in change:
        del body["id"]
    with pytest.raises(ValidationError):
        parse(body)
