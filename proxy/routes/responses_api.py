"""POST /v1/responses: OpenAI's Responses API over every dialect (SPEC §5i).

One more framing of the one way into a stream: the same opener (keys, admission, limits,
model, budgets, retries up to the commit point), then the Responses API's events (`stream:
true`) or one `response` object built from the same items (`stream: false`). Errors answer in
OpenAI's error object (app.py picks the shape by this route's path). Not resumable: the
Responses API resumes stored responses only, and the proxy stores none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse, Response

from proxy.errors import CompletionTooLarge, ErrorShape, UpstreamError, openai_error_body
from proxy.formats import Head, Item
from proxy.formats.responses_api import (
    RESPONSE_EVENTS,
    ResponseEventEncoder,
    ResponseObject,
    response_events,
)
from proxy.opening import Stream, StreamOpener, StreamRoute, answering_as
from proxy.parts import ItemSource, characters
from proxy.responses import StreamResponse, encode_part
from proxy.responses_request import ResponsesRequest
from proxy.values import Done, Failed, utf8_length

router = APIRouter()

RESPONSES_ROUTE = StreamRoute(ResponsesRequest, (RESPONSE_EVENTS,), resume_prefix="responses:")
# What a `stream: false` answer may hold in memory until its end (SPEC §5b), in UTF-8 bytes,
# as on /v1/chat/completions.
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
# The paths whose errors answer in OpenAI's shape.
ERROR_SHAPES: Final[dict[str, ErrorShape]] = {"/v1/responses": openai_error_body}


@router.post("/v1/responses")
async def create_response(
    stream: Annotated[Stream, Depends(StreamOpener(RESPONSES_ROUTE))],
) -> Response:
    body = stream.request
    assert isinstance(body, ResponsesRequest)
    response = ResponseObject.new(stream.head.message_id, body.model, body.echo())
    if body.stream:
        output = response_events(response)
        return StreamResponse(events(replace(stream.head, format=output), stream.items))
    return await whole_response(stream, response)


async def events(head: Head, items: ItemSource) -> AsyncGenerator[Item, None]:
    """The stream as a response's content; the opener closes the stream itself."""
    yield head
    async for item in items:
        yield item


async def whole_response(stream: Stream, response: ResponseObject) -> Response:
    """`stream: false`: the whole response once it has ended. Nothing was sent before the end,
    so a failure after the first part is still an error status (502), and the stream's log
    line says so."""
    head, record = stream.head, stream.record
    assert record is not None
    try:
        with answering_as(head.request_id):
            body = await _collect(response, stream.items)
    except UpstreamError as exc:
        record.refused(exc)
        raise
    # A budgeted key's x-ratelimit-* headers go with it.
    return JSONResponse(body, headers={"X-Request-ID": head.request_id, **dict(head.extra)})


async def _collect(response: ResponseObject, items: ItemSource) -> dict[str, Any]:
    """The items gathered by the events' own encoder (its events unsent): one shape of the
    output, streamed or not."""
    encoder = ResponseEventEncoder(response)
    size, limit = 0, MAX_RESPONSE_BYTES
    async for item in items:
        if isinstance(item, Done):
            return encoder.whole(item)
        if isinstance(item, Failed):
            raise _failure(item)
        encode_part(encoder, item)
        size += utf8_length(characters(item))
        if size > limit:
            message = f"the answer is longer than {limit} bytes: ask with stream: true"
            raise CompletionTooLarge(message)
    raise AssertionError("a stream ends with its Ending")


def _failure(failed: Failed) -> UpstreamError:
    """The stream's failure as the error it would have been before the commit point."""
    error = UpstreamError(failed.message)
    error.error_type = failed.error["error"]["type"]
    return error
