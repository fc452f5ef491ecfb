"""Request models and path operations; thin: validation here, the stream in its session."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from proxy.conversation import Conversation, Message
from proxy.errors import (
    BodyTooLarge,
    InvalidJSON,
    InvalidRequest,
    NotAcceptable,
    ProxyError,
    UnknownModel,
    UnsupportedMediaType,
)
from proxy.formats import STREAM_FORMATS, TEXT, OutputFormat, negotiate
from proxy.framed import FramedStreamingResponse, SessionItems, StoredItems
from proxy.guards import Guards
from proxy.record import StreamRecord
from proxy.relay import reachable
from proxy.responses import TextStreamingResponse
from proxy.resume import StoredStream
from proxy.resume.base import not_found, past_the_end
from proxy.services import Services, Upstream
from proxy.session import StreamSession
from proxy.settings import Settings

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


R = TypeVar("R", bound=StreamRequest)

# Resumable streams started here and in chat.py are kept under different names.
STREAM_PREFIX = "stream:"


@router.post("/v1/stream", response_class=TextStreamingResponse)
async def stream_text(request: Request) -> Response:
    """The client's key, the format, a slot, the body, the model, then the upstream up to
    the commit point; the response streams the rest and closes the session (SPEC §1).

    No FastAPI dependencies: their bookkeeping (six of them, once) was about a tenth of a
    request's CPU in the profile; these are plain calls, in SPEC order, cheapest first.
    """
    services = services_of(request)
    request_id = new_request_id(request)
    session = StreamSession(services, request_id, request.receive)
    async with session.opening():
        client = identify_client(request, services.guards)
        output = acceptable(request, STREAM_FORMATS)
        await session.admit(client, peer_of(request))
        body = await read_stream_request(request, services.settings)
        session.record.model = body.model or "-"  # what a refusal from here on names
        check_prompt_length(body, services.settings)
        upstream = choose_upstream(services.upstreams, body)
        stream_id = given_request_id(request)
        if services.resumable is not None and stream_id is not None:
            live = await services.resumable.start(
                session,
                STREAM_PREFIX + stream_id,
                owner_of(client),
                {"request_id": request_id},
                upstream,
                body.conversation(),
            )
            return stored_response(live, 0, request, request_id, output, services.settings)
        await session.open(upstream, body.conversation())
    if output is TEXT:
        return TextStreamingResponse(session)
    return FramedStreamingResponse(SessionItems(session), output, services.settings.sse_keepalive)


@router.get("/v1/stream/{stream_id}")
async def resume_stream(request: Request, stream_id: str) -> Response:
    """A resumable stream from `?offset=N` (or SSE's Last-Event-ID), then live (issue 13)."""
    services = services_of(request)
    request_id = new_request_id(request)
    with naming_refusals(request_id):
        client = identify_client(request, services.guards)
        output = acceptable(request, STREAM_FORMATS)
        offset = resume_offset(request)
        if services.resumable is None or not _REQUEST_ID.fullmatch(stream_id):
            raise not_found(stream_id)
        stored = await services.resumable.store.find(STREAM_PREFIX + stream_id, owner_of(client))
        if not stored.active and offset > stored.length:
            raise past_the_end(offset, stored.length)
    return stored_response(stored, offset, request, request_id, output, services.settings)


def stored_response(
    stored: StoredStream,
    offset: int,
    request: Request,
    request_id: str,
    output: OutputFormat,
    settings: Settings,
    message_id: str = "",
) -> FramedStreamingResponse:
    items = StoredItems(stored.follow(offset), request_id, request.receive)
    return FramedStreamingResponse(
        items, output, settings.sse_keepalive, offset=offset, message_id=message_id
    )


def acceptable(request: Request, offered: Sequence[OutputFormat]) -> OutputFormat:
    """The format the client's Accept asks for, or 406 (issue 13)."""
    output = negotiate(request.headers.get("accept"), offered)
    if output is None:
        types = ", ".join(candidate.media_type for candidate in offered)
        raise NotAcceptable(f"Accept must allow one of: {types}")
    return output


def resume_offset(request: Request) -> int:
    value = request.headers.get("last-event-id") or request.query_params.get("offset") or "0"
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidRequest("offset: must be a whole number of characters, 0 or more")
    return int(value)


def given_request_id(request: Request) -> str | None:
    """The client's own X-Request-ID, when it sent a sane one: the id of a resumable stream."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else None


def owner_of(client: str | None) -> str:
    """Whom a stored stream belongs to: the client key's id ("" on an open proxy)."""
    return client or ""


@contextmanager
def naming_refusals(request_id: str) -> Iterator[None]:
    """Refusals raised here answer with this request id."""
    try:
        yield
    except ProxyError as exc:
        exc.request_id = request_id
        raise


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def new_request_id(request: Request) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()


def identify_client(request: Request, guards: Guards) -> str | None:
    """The client's short id when keys are configured (401 without a valid one)."""
    return guards.keys.identify(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


def peer_of(request: Request) -> str:
    return request.client.host if request.client else "-"


async def authenticate(request: Request) -> str | None:
    """The stream's keys guard the other endpoints too; a refusal is logged like a stream's."""
    request_id = new_request_id(request)
    try:
        return identify_client(request, services_of(request).guards)
    except ProxyError as exc:
        exc.request_id = request_id
        record = StreamRecord(request_id, status=exc.status_code)
        record.failed(exc)
        record.finish()
        metrics = services_of(request).metrics
        metrics.rejected(exc)
        metrics.stream_ended(record, started=False)
        raise


async def read_stream_request(request: Request, settings: Settings) -> StreamRequest:
    return await read_request_body(request, settings, StreamRequest)


async def read_request_body(request: Request, settings: Settings, model: type[R]) -> R:
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
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise InvalidJSON("the request body is not valid JSON") from None
        raise InvalidRequest(_describe(errors)) from None


def check_prompt_length(body: StreamRequest, settings: Settings) -> None:
    conversation_chars = len(body.system or "") + (
        len(body.prompt) if body.prompt else sum(len(m.text()) for m in body.messages or ())
    )
    if conversation_chars > settings.max_prompt_chars:
        raise InvalidRequest(f"the prompt is longer than {settings.max_prompt_chars} characters")


def _describe(errors: list[ErrorDetails]) -> str:
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {message}{more}"


def choose_upstream(upstreams: Mapping[str, Upstream], body: StreamRequest) -> Upstream:
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
    services = services_of(request)
    default = services.default_upstream
    if await reachable(services.http, default, services.settings):
        return JSONResponse({"status": "ready", "model": default.spec.name})
    return JSONResponse({"status": "unavailable", "model": default.spec.name}, status_code=503)


@router.get("/v1/models", dependencies=[Depends(authenticate)])
async def list_models(request: Request) -> dict[str, object]:
    upstreams = services_of(request).upstreams
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "dialect": upstream.spec.dialect}
            for name, upstream in upstreams.items()
        ],
    }
