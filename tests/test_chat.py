"""POST /v1/chat (issue 13): the request DefaultChatTransport sends, the UI message stream."""

from __future__ import annotations

import httpx
import orjson
import pytest
from pydantic import ValidationError

from proxy.conversation import Image, Message
from proxy.fake_upstream import reply_text
from proxy.requests import ChatRequest
from tests.servers import ProxyServer
from tests.test_formats import sse_events

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


def test_ui_messages_become_the_conversation_text_and_image_parts() -> None:
    # An image `file` part goes upstream as an image since issue 27 (before, it was ignored).
    request = parse(SECOND_TURN)
    conversation = request.conversation()
    assert conversation.messages == (
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("user", "How are you?", (Image("data:,"),)),
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


def chat_body(chat_id: str, text: str) -> dict[str, object]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", "messageId": None}


async def test_the_answer_is_a_ui_message_stream(proxy: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @text=tricky @tokens=20"
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/chat", json=chat_body(marker, prompt))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    parts = [event["data"] for event in sse_events(response.content)]
    kinds = [part if part == "[DONE]" else part["type"] for part in parts]
    assert kinds[:3] == ["start", "start-step", "text-start"]
    assert kinds[-4:] == ["text-end", "finish-step", "finish", "[DONE]"]
    assert parts[0]["messageId"].startswith("msg-")
    text = "".join(part["delta"] for part in parts[3:-4])
    assert text == reply_text(prompt, 20)


@pytest.mark.parametrize(
    ("body", "status"),
    [({"messages": []}, 422), ({"id": "../x"}, 422), ({"prompt": "x"}, 422)],
)
async def test_a_malformed_chat_request_is_refused_before_any_stream(
    proxy: ProxyServer, marker: str, body: dict[str, object], status: int
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/chat", json={**chat_body(marker, marker), **body})
    assert response.status_code == status
    assert response.json()["error"]["type"] == "validation_error"
