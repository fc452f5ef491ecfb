"""What a client sends: the request models, reading and validating the body, the headers
the proxy reads, and the model a request names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from starlette.requests import Request

from proxy.conversation import Conversation, Image, Message
from proxy.errors import (
    BodyTooLarge,
    InvalidJSON,
    InvalidRequest,
    NotAcceptable,
    UnknownModel,
    UnsupportedMediaType,
)
from proxy.formats import OutputFormat, negotiate
from proxy.ids import GIVEN_REQUEST_ID, ID_PATTERN, request_id_in
from proxy.record import Arrival
from proxy.settings import ReasoningEffort, RequestLimits
from proxy.upstreams import Upstream


class MessagePart(BaseModel):
    """An AI SDK UI message part: `text` parts carry prompt text, `file` parts with an image
    media type an image (its `url`: a data: URL or a link); other parts are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    type: str
    text: str | None = None
    media_type: str | None = Field(default=None, alias="mediaType")
    url: str | None = None

    def image(self) -> Image | None:
        if self.type != "file" or not (self.media_type or "").startswith("image/"):
            return None
        return Image(self.url) if self.url else None


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

    def as_message(self) -> Message:
        images = (part.image() for part in self.parts or ())
        return Message(self.role, self.text(), tuple(image for image in images if image))


class StreamBody(BaseModel):
    """What every streaming route's request model gives the one way into a stream
    (proxy/opening.py): the model it names, its output allowance and its conversation."""

    # Unknown fields are ignored: frontend SDKs send their own (`id`, `trigger`, ...).
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)

    def prompt_chars(self) -> int:
        return self.conversation().characters()

    def conversation(self) -> Conversation:
        raise NotImplementedError

    def resume_id(self, given_request_id: str | None) -> str | None:
        """The id a resumable stream of this request is kept under: the client's own
        X-Request-ID, when it sent one (None: not resumable)."""
        return given_request_id

    def response_message_id(self) -> str:
        """The id of the message this request produces, in formats that name one."""
        return ""


class StreamRequest(StreamBody):
    """POST /v1/stream (SPEC §1)."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[str] | None = Field(default=None, max_length=16)
    # How hard a thinking model should think (OpenAI's reasoning_effort values); absent: the
    # model's configured default, else the upstream's.
    reasoning: ReasoningEffort | None = None

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> StreamRequest:
        if bool(self.prompt) == bool(self.messages):
            raise ValueError("exactly one of `prompt` and `messages` must be non-empty")
        return self

    def prompt_chars(self) -> int:
        conversation = (
            len(self.prompt) if self.prompt else sum(len(m.text()) for m in self.messages or ())
        )
        return len(self.system or "") + conversation

    def conversation(self) -> Conversation:
        if self.prompt:
            messages: tuple[Message, ...] = (Message("user", self.prompt),)
        else:
            messages = tuple(m.as_message() for m in self.messages or ())
        return Conversation(
            messages=messages,
            system=self.system or None,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop) if self.stop else None,
            reasoning=self.reasoning,
        )


class ChatRequest(StreamRequest):
    """The request `useChat` sends through the AI SDK's DefaultChatTransport (issue 13).

    `{"id": chat id, "messages": [UI messages], "trigger": "submit-message" |
    "regenerate-message", "messageId": ...}` plus whatever the app put in the transport's
    `body` (`model`, `system`, `max_tokens`, ...), validated as on POST /v1/stream. The SDK
    trims the messages itself before a regeneration, so the conversation is always the
    messages as sent.
    """

    id: str = Field(pattern=f"^{ID_PATTERN}$")
    trigger: str | None = None
    messageId: str | None = Field(default=None, max_length=128)  # the SDK's name

    @field_validator("id")
    @classmethod
    def _not_a_path_step(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("must not be . or ..")
        return value

    def resume_id(self, given_request_id: str | None) -> str | None:
        return self.id  # a chat's answer is resumed by the chat's id

    def response_message_id(self) -> str:
        """A regeneration replaces the message the client named; anything else is new."""
        if self.trigger == "regenerate-message" and self.messageId:
            return self.messageId
        return "msg-" + os.urandom(12).hex()


R = TypeVar("R", bound=BaseModel)


async def read_body(request: Request, limits: RequestLimits, model: type[R]) -> R:
    """The JSON body as `model`: 415, 413, 400 or 422 when it is not one."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the request body must be application/json")
    limit = limits.max_body_bytes
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
        raise InvalidRequest(_describe(errors), param=_param(errors[0])) from None


def _describe(errors: list[ErrorDetails]) -> str:
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {message}{more}"


def _param(error: ErrorDetails) -> str | None:
    """The field at fault as OpenAI names one (`messages.[0].content`); None for the body."""
    steps = [f"[{step}]" if isinstance(step, int) else step for step in error["loc"]]
    return ".".join(steps) or None


def check_prompt_length(conversation: Conversation, limits: RequestLimits) -> None:
    if conversation.characters() > limits.max_prompt_chars:
        limit = limits.max_prompt_chars
        raise InvalidRequest(f"the prompt is longer than {limit} characters", param="messages")


def choose_upstream(upstreams: Mapping[str, Upstream], body: StreamBody) -> Upstream:
    """The model the body names (the default when it names none): 404, or 422 for a
    max_tokens above the model's ceiling."""
    if body.model is None:
        upstream = next(iter(upstreams.values()))
    elif body.model in upstreams:
        upstream = upstreams[body.model]
    else:
        raise UnknownModel(f"unknown model {body.model[:100]!r}")
    if body.max_tokens is not None and body.max_tokens > upstream.spec.max_tokens:
        ceiling = upstream.spec.max_tokens
        raise InvalidRequest(f"max_tokens: must be at most {ceiling}", param="max_tokens")
    return upstream


def request_id_of(request: Request) -> str:
    """The request's id, derived once per request (proxy/ids.py `request_id_in`)."""
    return request_id_in(request.scope)


def given_request_id(request: Request) -> str | None:
    """The client's own X-Request-ID, when it sent a sane one."""
    request_id_in(request.scope)
    given: str | None = request.scope[GIVEN_REQUEST_ID]
    return given


def credentials(request: Request) -> tuple[str | None, str | None]:
    """The client key as it may be sent: `Authorization: Bearer`, or `x-api-key`."""
    headers = request.headers
    return headers.get("authorization"), headers.get("x-api-key")


def arrival_of(request: Request) -> Arrival:
    """The request's method, and the trace context its caller sent."""
    headers = request.headers
    return Arrival(request.method, headers.get("traceparent"), headers.get("tracestate"))


def acceptable(request: Request, offered: tuple[OutputFormat, ...]) -> OutputFormat:
    """The format the client's Accept asks for, or 406 (issue 13)."""
    if len(offered) == 1:
        return offered[0]
    output = negotiate(request.headers.get("accept"), offered)
    if output is None:
        types = ", ".join(candidate.media_type for candidate in offered)
        raise NotAcceptable(f"Accept must allow one of: {types}")
    return output


def resume_offset(request: Request) -> int:
    """Where a resume starts: SSE's Last-Event-ID, or `?offset=N` (characters)."""
    value = request.headers.get("last-event-id") or request.query_params.get("offset") or "0"
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidRequest("offset: must be a whole number of characters, 0 or more")
    return int(value)


def peer_of(request: Request) -> str:
    return request.client.host if request.client else "-"
