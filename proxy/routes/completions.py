"""POST /v1/chat/completions: OpenAI's Chat Completions API over every dialect (SPEC §5c).

One more framing of the one way into a stream: the same opener (keys, admission, limits,
model, retries up to the commit point), then `chat.completion.chunk` events (`stream: true`)
or one `chat.completion` object built from the same items (`stream: false`). Errors answer
in OpenAI's error object (app.py picks the shape by this route's path). Not resumable:
OpenAI's API has no resume.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from starlette.responses import Response

from proxy.errors import (
    ErrorShape,
    NotFound,
    openai_error_body,
)
from proxy.formats.completions import (
    CHAT_COMPLETION_CHUNKS,
    Completion,
    WholeAnswer,
    chat_completion_chunks,
)
from proxy.openai_request import ChatCompletionRequest
from proxy.opening import Stream, StreamOpener, StreamRoute

router = APIRouter()

COMPLETIONS_ROUTE = StreamRoute(
    ChatCompletionRequest, (CHAT_COMPLETION_CHUNKS,), resume_prefix="completions:"
)
# The rest of OpenAI's API that clients may call: refused clearly (404, naming what is not
# relayed) rather than with a bare "Not Found".
NOT_RELAYED: Final = {
    "/v1/completions": "the legacy Completions API",
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "image generation",
    "/v1/audio/speech": "speech",
    "/v1/audio/transcriptions": "transcription",
}
# The paths whose errors answer in OpenAI's shape.
ERROR_SHAPES: Final[dict[str, ErrorShape]] = dict.fromkeys(
    ("/v1/chat/completions", *NOT_RELAYED), openai_error_body
)
# What OpenAI's SDKs send with every request, from a browser too (openai-node's platform
# headers): a CORS preflight that did not allow them would refuse every call.
OPENAI_SDK_HEADERS: Final = (
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)


@router.post("/v1/chat/completions")
async def chat_completions(
    stream: Annotated[Stream, Depends(StreamOpener(COMPLETIONS_ROUTE))],
) -> Response:
    body = stream.request
    assert isinstance(body, ChatCompletionRequest)
    completion = Completion.new(stream.head.message_id, body.model)
    if body.stream:
        output = chat_completion_chunks(completion, body.include_usage)
        return stream.response(replace(stream.head, format=output))
    return await stream.whole(WholeAnswer(completion))


def _not_relayed(what: str) -> Callable[[], Awaitable[Response]]:
    async def refuse() -> Response:
        raise NotFound(f"{what} is not relayed: the proxy relays text, on /v1/chat/completions")

    return refuse


for _path, _what in NOT_RELAYED.items():
    router.add_api_route(_path, _not_relayed(_what), methods=["POST"], include_in_schema=False)
