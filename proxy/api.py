"""Request models and path operations; thin: validation here, streaming in the relay."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from proxy.conversation import Conversation, Message
from proxy.errors import (
    BodyTooLarge,
    InvalidJSON,
    InvalidRequest,
    UnknownModel,
    UnsupportedMediaType,
)
from proxy.guards import Guards
from proxy.relay import Relay, TextStream, Upstream
from proxy.responses import TextStreamingResponse
from proxy.settings import Settings
from proxy.watchdog import Watchdog

router = APIRouter()

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class MessagePart(BaseModel):
    """An AI SDK UI message part; only `text` parts carry prompt text."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | None = None
    parts: list[MessagePart] | None = None

    @model_validator(mode="after")
    def _has_text_source(self) -> ChatMessage:
        if self.content is None and self.parts is None:
            raise ValueError("a message needs `content` or `parts`")
        return self

    def text(self) -> str:
        if self.content is not None:
            return self.content
        return "".join(part.text or "" for part in self.parts or () if part.type == "text")


class StreamRequest(BaseModel):
    # Unknown fields are ignored: frontend SDKs send their own (`id`, `trigger`, ...).
    model_config = ConfigDict(extra="ignore", strict=True)
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    system: str | None = None
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[str] | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> StreamRequest:
        if bool(self.prompt) == bool(self.messages):
            raise ValueError("exactly one of `prompt` and `messages` must be non-empty")
        return self

    def conversation(self) -> Conversation:
        if self.prompt:
            messages: tuple[Message, ...] = (Message("user", self.prompt),)
        else:
            messages = tuple(Message(m.role, m.text()) for m in self.messages or ())
        return Conversation(
            messages=messages,
            system=self.system or None,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop) if self.stop else None,
        )


# One dependency for the stream, calling plain functions in order: FastAPI's bookkeeping for
# six dependencies was about a tenth of a request's CPU in the profile. Dependencies are
# `async def`: FastAPI runs plain `def` ones in a thread pool, a thread hop per call that
# queues behind 40 threads under load.


async def open_text_stream(request: Request, response: Response) -> AsyncIterator[TextStream]:
    """Request id, client key, a stream slot, the body, the model, then the upstream stream.

    Owns the slot and the upstream response: FastAPI exits this after the response, on every
    path (completion, abort, disconnect, any error before the commit point).
    """
    request_id = new_request_id(request)
    response.headers["X-Request-ID"] = request_id
    client = identify_client(request)
    async with admitted(request, client):
        body = await read_stream_request(request)
        upstream = choose_upstream(request, body)
        watchdog = Watchdog(request.receive)  # the body is read: receive() is its alone
        request.state.watchdog = watchdog
        relay: Relay = request.app.state.relay
        try:
            async with relay.open(
                upstream, body.conversation(), request_id, watchdog, client
            ) as stream:
                yield stream
        finally:
            watchdog.close()


@router.post("/v1/stream", response_class=TextStreamingResponse)
async def stream_text(
    text: Annotated[TextStream, Depends(open_text_stream)],
) -> AsyncIterator[bytes]:
    async for chunk in text:
        yield chunk


def new_request_id(request: Request) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    value = given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
    request.state.request_id = value
    return value


def identify_client(request: Request) -> str | None:
    """The client's short id when keys are configured (401 without a valid one)."""
    guards: Guards = request.app.state.guards
    client = guards.keys.identify(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    request.state.client = client
    return client


async def authenticate(request: Request) -> str | None:
    new_request_id(request)
    return identify_client(request)


@asynccontextmanager
async def admitted(request: Request, client: str | None) -> AsyncIterator[None]:
    """A slot under the proxy's and the client's limits, held until the block ends."""
    guards: Guards = request.app.state.guards
    guards.slots.acquire()
    try:
        identity = client or f"ip:{request.client.host if request.client else '-'}"
        holds_slot = await guards.client_limits.admit(identity) if guards.limited else False
        try:
            yield
        finally:
            if holds_slot:
                await guards.client_limits.release(identity)
    finally:
        guards.slots.release()


async def read_stream_request(request: Request) -> StreamRequest:
    settings: Settings = request.app.state.settings
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the request body must be application/json")
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    try:
        parsed = StreamRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise InvalidJSON("the request body is not valid JSON") from None
        raise InvalidRequest(_describe(errors)) from None
    request.state.model = parsed.model
    conversation_chars = len(parsed.system or "") + (
        len(parsed.prompt) if parsed.prompt else sum(len(m.text()) for m in parsed.messages or ())
    )
    if conversation_chars > settings.max_prompt_chars:
        raise InvalidRequest(f"the prompt is longer than {settings.max_prompt_chars} characters")
    return parsed


def _describe(errors: list[ErrorDetails]) -> str:
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {message}{more}"


def choose_upstream(request: Request, body: StreamRequest) -> Upstream:
    upstreams: dict[str, Upstream] = request.app.state.upstreams
    if body.model is None:
        upstream = next(iter(upstreams.values()))
    elif body.model in upstreams:
        upstream = upstreams[body.model]
    else:
        raise UnknownModel(f"unknown model {body.model[:100]!r}")
    if body.max_tokens is not None and body.max_tokens > upstream.spec.max_tokens:
        raise InvalidRequest(f"max_tokens: must be at most {upstream.spec.max_tokens}")
    return upstream


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    upstreams: dict[str, Upstream] = request.app.state.upstreams
    default = next(iter(upstreams.values()))
    relay: Relay = request.app.state.relay
    if await relay.reachable(default):
        return JSONResponse({"status": "ready", "model": default.spec.name})
    return JSONResponse({"status": "unavailable", "model": default.spec.name}, status_code=503)


@router.get("/v1/models", dependencies=[Depends(authenticate)])
async def list_models(request: Request) -> dict[str, object]:
    upstreams: dict[str, Upstream] = request.app.state.upstreams
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "dialect": upstream.spec.dialect}
            for name, upstream in upstreams.items()
        ],
    }
