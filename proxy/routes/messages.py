"""POST /v1/messages: Anthropic's Messages API over every dialect (SPEC §5i, issue 29).

One more framing of the one way into a stream: the same opener (keys by `x-api-key` or a
bearer token, admission, limits, model, retries up to the commit point), then Anthropic's
events (`stream: true`) or one `message` object built from the same items. Errors answer in
Anthropic's error object (app.py picks the shape by this route's path). Not resumable:
Anthropic's API has no resume.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from starlette.responses import Response

from proxy.errors import ErrorShape, anthropic_error_body
from proxy.formats.messages import (
    MESSAGE_EVENTS,
    MessageMeta,
    WholeMessage,
    message_events,
)
from proxy.messages_request import MessagesRequest, check_headers
from proxy.opening import Stream, StreamOpener, StreamRoute

router = APIRouter()

MESSAGES_ROUTE = StreamRoute(
    MessagesRequest, (MESSAGE_EVENTS,), resume_prefix="messages:", check_headers=check_headers
)
ERROR_SHAPES: Final[dict[str, ErrorShape]] = {"/v1/messages": anthropic_error_body}
# What Anthropic's SDKs send with every request, from a browser too (`dangerouslyAllowBrowser`):
# a CORS preflight that did not allow them would refuse every call.
ANTHROPIC_SDK_HEADERS: Final = (
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
)


@router.post("/v1/messages")
async def create_message(
    stream: Annotated[Stream, Depends(StreamOpener(MESSAGES_ROUTE))],
) -> Response:
    body = stream.request
    assert isinstance(body, MessagesRequest)
    meta = MessageMeta(stream.head.message_id, body.model)
    if body.stream:
        return stream.response(replace(stream.head, format=message_events(meta)))
    return await stream.whole(WholeMessage(meta))
