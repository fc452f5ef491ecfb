"""POST /v1/responses: OpenAI's Responses API over every dialect (SPEC §5i).

One more framing of the one way into a stream: the same opener (keys, admission, limits,
model, budgets, retries up to the commit point), then the Responses API's events (`stream:
true`) or one `response` object built from the same items (`stream: false`). Errors answer in
OpenAI's error object (app.py picks the shape by this route's path). Not resumable: the
Responses API resumes stored responses only, and the proxy stores none.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from starlette.responses import Response

from proxy.errors import ErrorShape, openai_error_body
from proxy.formats.responses_api import (
    RESPONSE_EVENTS,
    ResponseEventEncoder,
    ResponseObject,
    response_events,
)
from proxy.opening import Stream, StreamOpener, StreamRoute
from proxy.responses_request import ResponsesRequest

router = APIRouter()

RESPONSES_ROUTE = StreamRoute(ResponsesRequest, (RESPONSE_EVENTS,), resume_prefix="responses:")
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
        return stream.response(replace(stream.head, format=output))
    return await stream.whole(ResponseEventEncoder(response))
