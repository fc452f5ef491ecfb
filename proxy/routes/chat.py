"""POST /v1/chat: the AI SDK's `useChat` request, answered with its UI message stream
(issue 13); resumable under the chat's id with PROXY_RESUME."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from proxy.authentication import identify_client
from proxy.errors import NotFound, answering_as
from proxy.formats import UI_MESSAGE_STREAM, Head
from proxy.ids import sane_id
from proxy.opening import Stream, StreamOpener, StreamRoute
from proxy.requests import ChatRequest, request_id_of
from proxy.responses import StreamResponse
from proxy.resumable import owner_of
from proxy.resume import StoredStream
from proxy.resume.items import StoredItems
from proxy.services import Services, services_of

router = APIRouter()

CHAT_ROUTE = StreamRoute(ChatRequest, (UI_MESSAGE_STREAM,), resume_prefix="chat:")


@router.post("/v1/chat", response_class=StreamResponse)
async def chat(
    stream: Annotated[Stream, Depends(StreamOpener(CHAT_ROUTE))],
) -> StreamResponse:
    return stream.response()


@router.get("/v1/chat/{chat_id}/stream")
async def resume_chat(request: Request, chat_id: str) -> Response:
    """The AI SDK's resume call: the chat's answer in progress, from its start, then live;
    204 when none is in progress (also for another key's chat: its existence stays secret).

    A plain path operation, not a generator: "nothing to resume" is a 204, not a stream.
    """
    services = services_of(request)
    rid = request_id_of(request)
    with answering_as(rid):
        client = identify_client(request, services)
    stored = await answer_in_progress(services, chat_id, owner_of(client))
    if stored is None:
        return Response(status_code=204, headers={"X-Request-ID": rid})
    message_id = stored.attributes.get("message_id", "")
    head = Head(UI_MESSAGE_STREAM, rid, services.settings.sse_keepalive, message_id=message_id)
    items = StoredItems(stored.follow(0), rid, request.receive)
    return Stream(head, items).response(owned=True)  # no opener: the response closes it


async def answer_in_progress(services: Services, chat_id: str, owner: str) -> StoredStream | None:
    """The chat's stored answer if it is still being produced, for this client."""
    if services.resumable is None or sane_id(chat_id) is None:
        return None
    try:
        stored = await services.resumable.store.find(CHAT_ROUTE.resume_prefix + chat_id, owner)
    except NotFound:
        return None
    return stored if stored.active else None
