"""POST /v1/chat/completions: OpenAI's Chat Completions request, as the proxy's Conversation
(SPEC §5c).

The proxy relays text. What a request asks for beyond text (tools, images and other content
parts, several choices, a structured response format, log probabilities, audio) is refused
with a 400 naming the field (UnsupportedParameter), never silently dropped. Sampling hints the
dialects do not carry (`seed`, `frequency_penalty`, `presence_penalty`, `logit_bias`, ...) and
fields OpenAI does not know are ignored, as the other routes ignore unknown fields: frontends
send their own (Open WebUI's `chat_id`, `session_id`, ...).

Raised from the validators, UnsupportedParameter is not a ValueError: pydantic lets it through
untouched, so it reaches the one error mapping as it is.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.conversation import Conversation, Message, Role
from proxy.errors import UnsupportedParameter
from proxy.requests import StreamBody
from proxy.settings import ReasoningEffort

OpenAIRole = Literal["system", "developer", "user", "assistant", "tool", "function"]

# Choices that ask for nothing beyond one text answer are allowed, as clients send them.
_PLAIN_TOOL_CHOICES = (None, "none", "auto")


class ContentPart(BaseModel):
    """A content part; only `text` parts are relayed. Extra keys (Open WebUI's
    `cache_control`) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: OpenAIRole
    # A string is one text part; null is an assistant turn without text.
    content: list[ContentPart] | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None

    @field_validator("content", mode="before")
    @classmethod
    def _string_is_one_text_part(cls, value: object) -> object:
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        if value is not None and not isinstance(value, list):
            raise ValueError("must be a string or a list of content parts")
        return value

    def text(self) -> str:
        return "".join(part.text or "" for part in self.content or ())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool | None = None


class ChatCompletionRequest(StreamBody):
    """OpenAI's request body; `model` is required, as OpenAI's API requires it."""

    model: str
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool | None = None  # null, as every optional field of OpenAI's, is the default
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[str] | None = Field(default=None, max_length=16)
    reasoning_effort: ReasoningEffort | None = None
    user: str | dict[str, Any] | None = None  # Open WebUI's pipelines send an object
    # Asked for, and refused when they ask for more than one text answer.
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    function_call: Any = None
    response_format: Any = None
    logprobs: bool | None = None
    modalities: list[str] | None = None
    audio: Any = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _only_text(self) -> ChatCompletionRequest:
        refuse_beyond_text(self)
        for index, message in enumerate(self.messages):
            refuse_message_beyond_text(index, message)
        if self.max_completion_tokens is not None:  # the newer name wins
            self.max_tokens = self.max_completion_tokens
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)

    def conversation(self) -> Conversation:
        return Conversation(
            messages=tuple(Message(_role(m.role), m.text()) for m in self.messages),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop) if self.stop else None,
            reasoning=self.reasoning_effort,
        )

    def resume_id(self, given_request_id: str | None) -> str | None:
        return None  # OpenAI's API has no resume: neither has this route

    def response_message_id(self) -> str:
        """The completion's id, as OpenAI spells its ids."""
        return "chatcmpl-" + os.urandom(12).hex()


def refuse_beyond_text(body: ChatCompletionRequest) -> None:
    if body.n not in (None, 1):
        raise UnsupportedParameter("n: only 1 choice is relayed", param="n")
    for field in ("tools", "functions"):
        if getattr(body, field):
            raise UnsupportedParameter(f"{field}: tool calls are not relayed", param=field)
    for field in ("tool_choice", "function_call"):
        if getattr(body, field) not in _PLAIN_TOOL_CHOICES:
            raise UnsupportedParameter(f"{field}: tool calls are not relayed", param=field)
    if body.response_format not in (None, {"type": "text"}):
        message = "response_format: only text responses are relayed"
        raise UnsupportedParameter(message, param="response_format")
    if body.logprobs:
        raise UnsupportedParameter("logprobs: log probabilities are not relayed", param="logprobs")
    if body.audio is not None or (body.modalities and set(body.modalities) != {"text"}):
        raise UnsupportedParameter("modalities: only text is relayed", param="modalities")


def refuse_message_beyond_text(index: int, message: CompletionMessage) -> None:
    where = f"messages.[{index}]"
    if message.role in ("tool", "function"):
        raise UnsupportedParameter(
            f"{where}.role: {message.role} messages are not relayed", param=f"{where}.role"
        )
    for field in ("tool_calls", "function_call"):
        if getattr(message, field):
            raise UnsupportedParameter(
                f"{where}.{field}: tool calls are not relayed", param=f"{where}.{field}"
            )
    for number, part in enumerate(message.content or ()):
        if part.type != "text":
            param = f"{where}.content.[{number}].type"
            raise UnsupportedParameter(
                f"{param}: {part.type[:40]!r} parts are not relayed, only text", param=param
            )


def _role(role: OpenAIRole) -> Role:
    # OpenAI's `developer` messages are its newer models' system messages.
    if role == "developer":
        return "system"
    assert role in ("system", "user", "assistant"), "other roles are refused"
    return role
