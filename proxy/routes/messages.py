"""POST /v1/messages: Anthropic's Messages API over every dialect (SPEC §5i, issue 29).

One more framing of the one way into a stream: the same opener (keys by `x-api-key` or a
bearer token, admission, limits, model, retries up to the commit point), then Anthropic's
events (`stream: true`) or one `message` object built from the same items. Errors answer in
Anthropic's error object (app.py picks the shape by this route's path). Not resumable:
Anthropic's API has no resume.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse, Response

from proxy.errors import CompletionTooLarge, ErrorShape, UpstreamError, anthropic_error_body
from proxy.formats import Head, Item
from proxy.formats.messages import (
    MESSAGE_EVENTS,
    MessageMeta,
    WholeMessage,
    message_events,
    message_json,
)
from proxy.messages_request import MessagesRequest, check_headers
from proxy.opening import Stream, StreamOpener, StreamRoute, answering_as
from proxy.parts import ItemSource, characters
from proxy.responses import StreamResponse
from proxy.values import Done, Failed, utf8_length

router = APIRouter()

MESSAGES_ROUTE = StreamRoute(
    MessagesRequest, (MESSAGE_EVENTS,), resume_prefix="messages:", check_headers=check_headers
)
# What a not-streamed answer may hold in memory until its end (SPEC §5b), in UTF-8 bytes.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
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
        return StreamResponse(
            events(replace(stream.head, format=message_events(meta)), stream.items)
        )
    return await whole_message(stream, meta)


async def events(head: Head, items: ItemSource) -> AsyncGenerator[Item, None]:
    """The stream as a response's content; the opener closes the stream itself."""
    yield head
    async for item in items:
        yield item


async def whole_message(stream: Stream, meta: MessageMeta) -> Response:
    """Not streamed: the whole message once it has ended; a failure after the first part is
    still an error status (502), and the stream's log line says so."""
    head, record = stream.head, stream.record
    assert record is not None
    try:
        with answering_as(head.request_id):
            body = await _collect(meta, stream.items)
    except UpstreamError as exc:
        record.refused(exc)
        raise
    return JSONResponse(body, headers={"X-Request-ID": head.request_id, **dict(head.extra)})


async def _collect(meta: MessageMeta, items: ItemSource) -> dict[str, Any]:
    whole, size = WholeMessage(), 0
    async for item in items:
        if isinstance(item, Done):
            return message_json(meta, whole, item)
        if isinstance(item, Failed):
            error = UpstreamError(item.message)
            error.error_type = item.error["error"]["type"]
            raise error
        whole.add(item)
        size += utf8_length(characters(item))
        if size > MAX_MESSAGE_BYTES:
            message = f"the answer is longer than {MAX_MESSAGE_BYTES} bytes: ask with stream: true"
            raise CompletionTooLarge(message)
    raise AssertionError("a stream ends with its Ending")
