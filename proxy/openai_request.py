"""POST /v1/chat/completions: OpenAI's Chat Completions request, as the proxy's Conversation
(SPEC §5c, §5h).

Text, images (`image_url` parts: `data:` URLs and https links), function tools, the calls an
assistant turn made and the `tool` results, and a structured `response_format` become the
Conversation; whether the model's dialect can carry them is decided once the model is chosen
(proxy/opening.py). What the proxy never relays (several choices, log probabilities, audio,
tools that are not functions, the legacy `functions`) is refused with a 400 naming the field
(UnsupportedParameter), never silently dropped. Sampling hints the dialects do not carry
(`seed`, `frequency_penalty`, `presence_penalty`, `logit_bias`, ...) and fields OpenAI does not
know are ignored, as the other routes ignore unknown fields: frontends send their own (Open
WebUI's `chat_id`, `session_id`, ...).

Raised from the validators, UnsupportedParameter is not a ValueError: pydantic lets it through
untouched, so it reaches the one error mapping as it is.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.conversation import (
    Conversation,
    ForcedTool,
    Image,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
)
from proxy.errors import UnsupportedParameter
from proxy.requests import StreamBody
from proxy.settings import ReasoningEffort

OpenAIRole = Literal["system", "developer", "user", "assistant", "tool", "function"]
_IGNORED = ConfigDict(extra="ignore", strict=True)


class ImageURL(BaseModel):
    model_config = _IGNORED
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    """A content part: `text` or `image_url`. Extra keys (Open WebUI's `cache_control`) are
    ignored."""

    model_config = _IGNORED
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCall(BaseModel):
    model_config = _IGNORED
    name: str
    arguments: str = ""


class AssistantToolCall(BaseModel):
    model_config = _IGNORED
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CompletionMessage(BaseModel):
    model_config = _IGNORED
    role: OpenAIRole
    # A string is one text part; null is an assistant turn without text.
    content: list[ContentPart] | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None
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
        return "".join(part.text or "" for part in self.content or () if part.type == "text")

    def as_message(self) -> Message:
        images = tuple(
            Image(part.image_url.url, part.image_url.detail)
            for part in self.content or ()
            if part.image_url is not None
        )
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments)
            for call in self.tool_calls or ()
        )
        return Message(_role(self.role), self.text(), images, calls, self.tool_call_id)


class FunctionDefinition(BaseModel):
    model_config = _IGNORED
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = _IGNORED
    type: str
    function: FunctionDefinition | None = None


class NamedFunction(BaseModel):
    model_config = _IGNORED
    name: str


class NamedToolChoice(BaseModel):
    model_config = _IGNORED
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormatRequest(BaseModel):
    model_config = _IGNORED
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def as_format(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return ResponseFormat("json_object")
        given = self.json_schema or JSONSchemaFormat()
        return ResponseFormat(
            "json_schema", given.name, given.json_schema, given.strict, given.description
        )


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
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatRequest | None = None
    # Asked for, and refused when they ask for what the proxy never relays.
    n: int | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    modalities: list[str] | None = None
    audio: Any = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _only_what_is_relayed(self) -> ChatCompletionRequest:
        refuse_never_relayed(self)
        for index, message in enumerate(self.messages):
            refuse_message_never_relayed(index, message)
        if self.max_completion_tokens is not None:  # the newer name wins
            self.max_tokens = self.max_completion_tokens
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)

    def conversation(self) -> Conversation:
        return Conversation(
            messages=tuple(message.as_message() for message in self.messages),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop) if self.stop else None,
            reasoning=self.reasoning_effort,
            tools=tuple(_tool(definition) for definition in self.tools or ()),
            tool_choice=_tool_choice(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format.as_format() if self.response_format else None,
        )

    def resume_id(self, given_request_id: str | None) -> str | None:
        return None  # OpenAI's API has no resume: neither has this route

    def response_message_id(self) -> str:
        """The completion's id, as OpenAI spells its ids."""
        return "chatcmpl-" + os.urandom(12).hex()


def refuse_never_relayed(body: ChatCompletionRequest) -> None:
    if body.n not in (None, 1):
        raise UnsupportedParameter("n: only 1 choice is relayed", param="n")
    if body.functions:
        raise UnsupportedParameter("functions: the legacy functions: use tools", param="functions")
    if body.function_call not in (None, "none", "auto"):
        message = "function_call: the legacy function_call: use tool_choice"
        raise UnsupportedParameter(message, param="function_call")
    for index, tool in enumerate(body.tools or ()):
        if tool.type != "function" or tool.function is None:
            param = f"tools.[{index}].type"
            message = f"{param}: only function tools are relayed, not {tool.type[:40]!r}"
            raise UnsupportedParameter(message, param=param)
    if body.logprobs:
        raise UnsupportedParameter("logprobs: log probabilities are not relayed", param="logprobs")
    if body.audio is not None or (body.modalities and set(body.modalities) != {"text"}):
        raise UnsupportedParameter("modalities: only text is relayed", param="modalities")


def refuse_message_never_relayed(index: int, message: CompletionMessage) -> None:
    where = f"messages.[{index}]"
    if message.role == "function" or message.function_call:
        field = "role" if message.role == "function" else "function_call"
        message_text = f"{where}.{field}: the legacy function calls: use tool_calls"
        raise UnsupportedParameter(message_text, param=f"{where}.{field}")
    if message.role == "tool" and not message.tool_call_id:
        param = f"{where}.tool_call_id"
        raise UnsupportedParameter(f"{param}: a tool message answers a call", param=param)
    for number, part in enumerate(message.content or ()):
        param = f"{where}.content.[{number}]"
        if part.type not in ("text", "image_url") or (part.type == "image_url") != bool(
            part.image_url
        ):
            raise UnsupportedParameter(
                f"{param}.type: {part.type[:40]!r} parts are not relayed, only text and images",
                param=f"{param}.type",
            )
        url = part.image_url.url if part.image_url else ""
        if part.image_url and not url.startswith(("data:image/", "https://")):
            message_text = f"{param}.image_url: an image is a data:image/ URL or an https link"
            raise UnsupportedParameter(message_text, param=f"{param}.image_url")


def _tool(definition: ToolDefinition) -> Tool:
    function = definition.function
    assert function is not None, "refused before"
    return Tool(function.name, function.description, function.parameters, function.strict)


def _tool_choice(choice: str | NamedToolChoice | None) -> ToolChoice | None:
    if isinstance(choice, NamedToolChoice):
        return ForcedTool(choice.function.name)
    return choice  # type: ignore[return-value]


def _role(role: OpenAIRole) -> Role:
    # OpenAI's `developer` messages are its newer models' system messages.
    if role == "developer":
        return "system"
    assert role != "function", "refused before"
    return role
