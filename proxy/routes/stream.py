"""POST /v1/stream (SPEC §1): raw text by default; SSE or NDJSON by Accept (issue 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from proxy.authentication import identify_client
from proxy.errors import answering_as
from proxy.formats import STREAM_FORMATS, Head
from proxy.ids import sane_id
from proxy.opening import Stream, StreamOpener, StreamRoute
from proxy.requests import StreamRequest, acceptable, request_id_of, resume_offset
from proxy.responses import StreamResponse
from proxy.resumable import owner_of
from proxy.resume.base import not_found, past_the_end
from proxy.resume.items import StoredItems, answer_after
from proxy.services import services_of

router = APIRouter()

# Resumable streams started here are kept apart from the chat's.
STREAM_ROUTE = StreamRoute(StreamRequest, STREAM_FORMATS, resume_prefix="stream:")


@router.post("/v1/stream", response_class=StreamResponse)
async def stream_text(
    stream: Annotated[Stream, Depends(StreamOpener(STREAM_ROUTE))],
) -> StreamResponse:
    return stream.response()


async def find_stored(request: Request, stream_id: str) -> AsyncIterator[Stream]:
    """A resumable stream from `?offset=N` (or SSE's Last-Event-ID), then live."""
    services = services_of(request)
    rid = request_id_of(request)
    with answering_as(rid):
        client = identify_client(request, services)
        output = acceptable(request, STREAM_ROUTE.formats)
        offset = resume_offset(request)
        if services.resumable is None or sane_id(stream_id) is None:
            raise not_found(stream_id)
        key = STREAM_ROUTE.resume_prefix + stream_id
        stored = await services.resumable.store.find(key, owner_of(client))
        if not stored.active and offset > stored.length:
            raise past_the_end(offset, stored.length)
    if output.text_only:  # the client counted the answer's characters alone
        items = StoredItems(answer_after(stored.follow(0), offset), rid, request.receive)
    else:
        items = StoredItems(stored.follow(offset), rid, request.receive)
    try:
        yield Stream(Head(output, rid, services.settings.sse_keepalive, offset), items)
    finally:
        await items.aclose()


@router.get("/v1/stream/{stream_id}", response_class=StreamResponse)
async def resume_stream(
    stream: Annotated[Stream, Depends(find_stored)],
) -> StreamResponse:
    return stream.response()
