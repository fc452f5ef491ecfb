"""The request `useChat` sends through the AI SDK's DefaultChatTransport (issue 13).

`{"id": chat id, "messages": [UI messages], "trigger": "submit-message" | "regenerate-message",
"messageId": ...}` plus whatever the app put in the transport's `body` (`model`, `system`,
`max_tokens`, `temperature`, ...), validated as on POST /v1/stream. The SDK trims the
messages itself before a regeneration, so the conversation is always the messages as sent.
"""

from __future__ import annotations

import os
import re

from fastapi import APIRouter, Request, Response
from pydantic import Field, field_validator

from proxy.api import (
    StreamRequest,
    check_prompt_length,
    choose_upstream,
    identify_client,
    naming_refusals,
    new_request_id,
    owner_of,
    peer_of,
    read_request_body,
    services_of,
    stored_response,
)
from proxy.errors import NotFound
from proxy.formats import UI_MESSAGE_STREAM
from proxy.framed import FramedStreamingResponse, SessionItems
from proxy.resume import StoredStream
from proxy.services import Services
from proxy.session import StreamSession

router = APIRouter()

# Resumable chat streams are kept under the chat's id.
CHAT_PREFIX = "chat:"

# The same characters as an X-Request-ID: the chat id names a stored stream and a URL path.
CHAT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class ChatRequest(StreamRequest):
    id: str = Field(pattern=CHAT_ID_PATTERN)
    trigger: str | None = None
    messageId: str | None = Field(default=None, max_length=128)  # the SDK's name

    @field_validator("id")
    @classmethod
    def _not_a_path_step(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("must not be . or ..")
        return value

    def response_message_id(self) -> str:
        """The id of the assistant message this request produces.

        A regeneration replaces the message the client named; anything else is a new one.
        """
        if self.trigger == "regenerate-message" and self.messageId:
            return self.messageId
        return "msg-" + os.urandom(12).hex()


@router.post("/v1/chat")
async def chat(request: Request) -> Response:
    """useChat's request, answered with the AI SDK's UI message stream; resumable under the
    chat's id with PROXY_RESUME."""
    services = services_of(request)
    settings = services.settings
    request_id = new_request_id(request)
    session = StreamSession(services, request_id, request.receive)
    async with session.opening():
        client = identify_client(request, services.guards)
        await session.admit(client, peer_of(request))
        body = await read_request_body(request, settings, ChatRequest)
        session.record.model = body.model or "-"
        check_prompt_length(body, settings)
        upstream = choose_upstream(services.upstreams, body)
        message_id = body.response_message_id()
        if services.resumable is not None:
            live = await services.resumable.start(
                session,
                CHAT_PREFIX + body.id,
                owner_of(client),
                {"request_id": request_id, "message_id": message_id},
                upstream,
                body.conversation(),
            )
            return stored_response(
                live, 0, request, request_id, UI_MESSAGE_STREAM, settings, message_id
            )
        await session.open(upstream, body.conversation())
    return FramedStreamingResponse(
        SessionItems(session), UI_MESSAGE_STREAM, settings.sse_keepalive, message_id=message_id
    )


@router.get("/v1/chat/{chat_id}/stream")
async def resume_chat(request: Request, chat_id: str) -> Response:
    """The AI SDK's resume call: the chat's answer in progress, from its start, then live;
    204 when none is in progress (also for another key's chat: its existence stays secret)."""
    services = services_of(request)
    request_id = new_request_id(request)
    with naming_refusals(request_id):
        client = identify_client(request, services.guards)
    stored = await answer_in_progress(services, chat_id, owner_of(client))
    if stored is None:
        return Response(status_code=204, headers={"X-Request-ID": request_id})
    message_id = stored.attributes.get("message_id", "")
    return stored_response(
        stored, 0, request, request_id, UI_MESSAGE_STREAM, services.settings, message_id
    )


async def answer_in_progress(services: Services, chat_id: str, owner: str) -> StoredStream | None:
    """The chat's stored answer if it is still being produced, for this client."""
    if services.resumable is None or not re.fullmatch(CHAT_ID_PATTERN, chat_id):
        return None
    try:
        stored = await services.resumable.store.find(CHAT_PREFIX + chat_id, owner)
    except NotFound:
        return None
    return stored if stored.active else None
